"""PS3.15 Annex E as data: the rows of Table E.1-1 (Application Level Confidentiality Profile Attributes) with
the Basic Profile's action and, for the options hounsfield implements, the option's action; the options and
their codes (CID 7050, De-identification Method).

Action codes (PS3.15 E.1.1): D replace with a non-zero length dummy value consistent with the VR; Z replace
with a zero length value (or a dummy); X remove; K keep (sequences: the profile applied to their items); C
clean (values of similar meaning without identifying information); U replace with a UID consistent within the
set of instances; Z/D, X/Z, X/D, X/Z/D, X/Z/U* the first unless the next is needed to keep the IOD conformant
(Type 3 / 2 / 1). "A requirement for an Option, when implemented, overrides any requirement for the underlying
Profile." How the engine resolves combined codes without the IOD at hand is in ``engine``.

Only the table's rows are here, plus the rules that stand for its non-tag rows (private attributes, Curve Data
50xx, Overlay 60xx) and what E.1.1 Note 4 suggests for dates and times not yet in the table (by VR).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

from hounsfield.errors import InvalidQuery


class Option(str, enum.Enum):
    """The options of the Basic Profile hounsfield implements (PS3.15 E.3), by the name users give them."""

    RETAIN_DATES = "retain-dates"  # E.3.6 Retain Longitudinal Temporal Information with Full Dates
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"  # E.3.7
    CLEAN_DESCRIPTORS = "clean-descriptors"  # E.3.5
    RETAIN_UIDS = "retain-uids"  # E.3.9


@dataclass(frozen=True)
class Code:
    """A coded entry of CID 7050 (coding scheme DCM), for De-identification Method Code Sequence (0012,0064)."""

    value: str
    meaning: str
    scheme: str = "DCM"


BASIC_PROFILE = Code("113100", "Basic Application Confidentiality Profile")
OPTION_CODES: Mapping[Option, Code] = MappingProxyType({
    Option.CLEAN_DESCRIPTORS: Code("113105", "Clean Descriptors Option"),
    Option.RETAIN_DATES: Code("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    Option.RETAIN_PATIENT_CHARACTERISTICS: Code("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_UIDS: Code("113110", "Retain UIDs Option"),
})
# When several options in use give an attribute an action, the one that retains most applies.
_RETAINING_FIRST = ("K", "C")


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1: the attribute, the Basic Profile's action and the options' actions."""

    tag: int | None  # None for a row that is no single tag (private attributes, repeating groups, by VR)
    name: str
    basic: str
    options: Mapping[Option, str] = field(default_factory=dict)

    def action(self, options: Iterable[Option]) -> str:
        """The action for this attribute with ``options`` in use (E.1.1: an option overrides the profile)."""
        given = [self.options[o] for o in options if o in self.options]
        for code in _RETAINING_FIRST:
            if code in given:
                return code
        return given[0] if given else self.basic

    @property
    def identifying(self) -> bool:
        """Whether the attribute's value identifies someone: the profile never keeps it and no option cleans it
        (its values are what Clean Descriptors looks for in the descriptors)."""
        return self.basic not in ("K", "U") and "C" not in self.options.values() and "K" not in self.options.values()


def _row(tag: int, name: str, basic: str, *, d: str | None = None, p: str | None = None, c: str | None = None,
         u: str | None = None) -> Rule:
    """A row; d, p, c and u are the actions of Retain Longitudinal Temporal Information with Full Dates, Retain
    Patient Characteristics, Clean Descriptors and Retain UIDs when the table gives one."""
    given = {Option.RETAIN_DATES: d, Option.RETAIN_PATIENT_CHARACTERISTICS: p, Option.CLEAN_DESCRIPTORS: c,
             Option.RETAIN_UIDS: u}
    return Rule(tag, name, basic, MappingProxyType({o: a for o, a in given.items() if a is not None}))


# PS3.15 Table E.1-1, every row with a tag (the repeating-group and private rows are the rules further down).
_ROWS = (
    _row(0x00080050, "Accession Number", "Z"),
    _row(0x00184000, "Acquisition Comments", "X", c="C"),
    _row(0x00400555, "Acquisition Context Sequence", "X/Z"),
    _row(0x00080022, "Acquisition Date", "X/Z", d="K"),
    _row(0x0008002A, "Acquisition DateTime", "X/Z/D", d="K"),
    _row(0x00181400, "Acquisition Device Processing Description", "X/D", c="C"),
    _row(0x001811BB, "Acquisition Field Of View Label", "D", c="C"),
    _row(0x00189424, "Acquisition Protocol Description", "X", c="C"),
    _row(0x00080032, "Acquisition Time", "X/Z", d="K"),
    _row(0x00404035, "Actual Human Performers Sequence", "X"),
    _row(0x001021B0, "Additional Patient History", "X", c="C"),
    _row(0x0040A353, "Address (Trial)", "X"),
    _row(0x00380010, "Admission ID", "X"),
    _row(0x00380020, "Admitting Date", "X", d="K"),
    _row(0x00081084, "Admitting Diagnoses Code Sequence", "X", c="C"),
    _row(0x00081080, "Admitting Diagnoses Description", "X", c="C"),
    _row(0x00380021, "Admitting Time", "X", d="K"),
    _row(0x00001000, "Affected SOP Instance UID", "X", u="K"),
    _row(0x00102110, "Allergies", "X", p="C", c="C"),
    _row(0x40000010, "Arbitrary", "X"),
    _row(0x0040A078, "Author Observer Sequence", "X"),
    _row(0x22000005, "Barcode Value", "X/Z"),
    _row(0x300A00C3, "Beam Description", "X", c="C"),
    _row(0x300A00DD, "Bolus Description", "X", c="C"),
    _row(0x00101081, "Branch of Service", "X"),
    _row(0x0016004D, "Camera Owner Name", "X"),
    _row(0x00181007, "Cassette ID", "X"),
    _row(0x00120060, "Clinical Trial Coordinating Center Name", "Z"),
    _row(0x00120082, "Clinical Trial Protocol Ethics Committee Approval Number", "X"),
    _row(0x00120081, "Clinical Trial Protocol Ethics Committee Name", "D"),
    _row(0x00120020, "Clinical Trial Protocol ID", "D"),
    _row(0x00120021, "Clinical Trial Protocol Name", "Z"),
    _row(0x00120072, "Clinical Trial Series Description", "X", c="C"),
    _row(0x00120071, "Clinical Trial Series ID", "X"),
    _row(0x00120030, "Clinical Trial Site ID", "Z"),
    _row(0x00120031, "Clinical Trial Site Name", "Z"),
    _row(0x00120010, "Clinical Trial Sponsor Name", "D"),
    _row(0x00120040, "Clinical Trial Subject ID", "D"),
    _row(0x00120042, "Clinical Trial Subject Reading ID", "D"),
    _row(0x00120051, "Clinical Trial Time Point Description", "X", c="C"),
    _row(0x00120050, "Clinical Trial Time Point ID", "Z"),
    _row(0x00400310, "Comments on Radiation Dose", "X", c="C"),
    _row(0x00400280, "Comments on the Performed Procedure Step", "X", c="C"),
    _row(0x300A02EB, "Compensator Description", "X", c="C"),
    _row(0x00209161, "Concatenation UID", "U", u="K"),
    _row(0x3010000F, "Conceptual Volume Combination Description", "Z", c="C"),
    _row(0x30100017, "Conceptual Volume Description", "Z", c="C"),
    _row(0x30100006, "Conceptual Volume UID", "U", u="K"),
    _row(0x00403001, "Confidentiality Constraint on Patient Data Description", "X"),
    _row(0x30100013, "Constituent Conceptual Volume UID", "U", u="K"),
    _row(0x0008009C, "Consulting Physician's Name", "Z"),
    _row(0x0008009D, "Consulting Physician Identification Sequence", "X"),
    _row(0x0050001B, "Container Component ID", "X"),
    _row(0x0040051A, "Container Description", "X", c="C"),
    _row(0x00400512, "Container Identifier", "D"),
    _row(0x00700086, "Content Creator's Identification Code Sequence", "X"),
    _row(0x00700084, "Content Creator's Name", "Z/D"),
    _row(0x00080023, "Content Date", "Z/D", d="K"),
    _row(0x0040A730, "Content Sequence", "D"),
    _row(0x00080033, "Content Time", "Z/D", d="K"),
    _row(0x00180010, "Contrast/Bolus Agent", "Z/D", c="C"),
    _row(0x0018A003, "Contribution Description", "X", c="C"),
    _row(0x00102150, "Country of Residence", "X"),
    _row(0x0040A307, "Current Observer (Trial)", "X"),
    _row(0x00380300, "Current Patient Location", "X"),
    _row(0x00080025, "Curve Date", "X", d="K"),
    _row(0x00080035, "Curve Time", "X", d="K"),
    _row(0x0040A07C, "Custodial Organization Sequence", "X"),
    _row(0xFFFCFFFC, "Data Set Trailing Padding", "X"),
    _row(0x0018937F, "Decomposition Description", "X", c="C"),
    _row(0x00082111, "Derivation Description", "X", c="C"),
    _row(0x0018700A, "Detector ID", "X/D"),
    _row(0x3010001B, "Device Alternate Identifier", "Z"),
    _row(0x00500020, "Device Description", "X"),
    _row(0x3010002D, "Device Label", "D"),
    _row(0x00181000, "Device Serial Number", "X/Z/D"),
    _row(0x0016004B, "Device Setting Description", "X", c="C"),
    _row(0x00181002, "Device UID", "U", u="K"),
    _row(0xFFFAFFFA, "Digital Signatures Sequence", "X"),
    _row(0x04000100, "Digital Signature UID", "U"),
    _row(0x00209164, "Dimension Organization UID", "U", u="K"),
    _row(0x00380040, "Discharge Diagnosis Description", "X", c="C"),
    _row(0x4008011A, "Distribution Address", "X"),
    _row(0x40080119, "Distribution Name", "X"),
    _row(0x300A0016, "Dose Reference Description", "X", c="C"),
    _row(0x300A0013, "Dose Reference UID", "U", u="K"),
    _row(0x3010006E, "Dosimetric Objective UID", "U", u="K"),
    _row(0x00189517, "End Acquisition DateTime", "X/D", d="K"),
    _row(0x30100037, "Entity Description", "X", c="C"),
    _row(0x30100035, "Entity Label", "D", c="C"),
    _row(0x30100038, "Entity Long Label", "D", c="C"),
    _row(0x30100036, "Entity Name", "X", c="C"),
    _row(0x300A0676, "Equipment Frame of Reference Description", "X", c="C"),
    _row(0x00102160, "Ethnic Group", "X", p="K"),
    _row(0x00404011, "Expected Completion DateTime", "X", d="K"),
    _row(0x00080058, "Failed SOP Instance UID List", "U", u="K"),
    _row(0x0070031A, "Fiducial UID", "U", u="K"),
    _row(0x00402017, "Filler Order Number / Imaging Service Request", "Z"),
    _row(0x30080054, "First Treatment Date", "X/D", d="K"),
    _row(0x300A0196, "Fixation Device Description", "X", c="C"),
    _row(0x00340002, "Flow Identifier", "D"),
    _row(0x00340001, "Flow Identifier Sequence", "D"),
    _row(0x3010007F, "Fractionation Notes", "Z", c="C"),
    _row(0x300A0072, "Fraction Group Description", "X", c="C"),
    _row(0x00209158, "Frame Comments", "X", c="C"),
    _row(0x00200052, "Frame of Reference UID", "U", u="K"),
    _row(0x00340007, "Frame Origin Timestamp", "D", d="K"),
    _row(0x00181008, "Gantry ID", "X"),
    _row(0x00181005, "Generator ID", "X"),
    _row(0x00160076, "GPS Altitude", "X"),
    _row(0x00160075, "GPS Altitude Ref", "X"),
    _row(0x0016008C, "GPS Area Information", "X"),
    _row(0x0016008D, "GPS Date Stamp", "X", d="K"),
    _row(0x00160088, "GPS Dest Bearing", "X"),
    _row(0x00160087, "GPS Dest Bearing Ref", "X"),
    _row(0x0016008A, "GPS Dest Distance", "X"),
    _row(0x00160089, "GPS Dest Distance Ref", "X"),
    _row(0x00160084, "GPS Dest Latitude", "X"),
    _row(0x00160083, "GPS Dest Latitude Ref", "X"),
    _row(0x00160086, "GPS Dest Longitude", "X"),
    _row(0x00160085, "GPS Dest Longitude Ref", "X"),
    _row(0x0016008E, "GPS Differential", "X"),
    _row(0x0016007B, "GPS DOP", "X"),
    _row(0x00160081, "GPS Img Direction", "X"),
    _row(0x00160080, "GPS Img Direction Ref", "X"),
    _row(0x00160072, "GPS Latitude", "X"),
    _row(0x00160071, "GPS Latitude Ref", "X"),
    _row(0x00160074, "GPS Longitude", "X"),
    _row(0x00160073, "GPS Longitude Ref", "X"),
    _row(0x00160082, "GPS Map Datum", "X"),
    _row(0x0016007A, "GPS Measure Mode", "X"),
    _row(0x0016008B, "GPS Processing Method", "X"),
    _row(0x00160078, "GPS Satellites", "X"),
    _row(0x0016007D, "GPS Speed", "X"),
    _row(0x0016007C, "GPS Speed Ref", "X"),
    _row(0x00160079, "GPS Status", "X"),
    _row(0x00160077, "GPS Time Stamp", "X"),
    _row(0x0016007F, "GPS Track", "X"),
    _row(0x0016007E, "GPS Track Ref", "X"),
    _row(0x00160070, "GPS Version ID", "X"),
    _row(0x00700001, "Graphic Annotation Sequence", "D"),
    _row(0x00404037, "Human Performer's Name", "X"),
    _row(0x00404036, "Human Performer's Organization", "X"),
    _row(0x00880200, "Icon Image Sequence", "X"),
    _row(0x00084000, "Identifying Comments", "X", c="C"),
    _row(0x00204000, "Image Comments", "X", c="C"),
    _row(0x00284000, "Image Presentation Comments", "X"),
    _row(0x00402400, "Imaging Service Request Comments", "X", c="C"),
    _row(0x003A0314, "Impedance Measurement DateTime", "D", d="K"),
    _row(0x40080300, "Impressions", "X", c="C"),
    _row(0x00080015, "Instance Coercion DateTime", "X", d="K"),
    _row(0x00080014, "Instance Creator UID", "U", u="K"),
    _row(0x04000600, "Instance Origin Status", "X"),
    _row(0x00080081, "Institution Address", "X"),
    _row(0x00081040, "Institutional Department Name", "X"),
    _row(0x00081041, "Institutional Department Type Code Sequence", "X"),
    _row(0x00080082, "Institution Code Sequence", "X/Z/D"),
    _row(0x00080080, "Institution Name", "X/Z/D"),
    _row(0x00101050, "Insurance Plan Identification", "X"),
    _row(0x3010004D, "Intended Phase End Date", "X/D", d="K"),
    _row(0x3010004C, "Intended Phase Start Date", "X/D", d="K"),
    _row(0x00401011, "Intended Recipients of Results Identification Sequence", "X"),
    _row(0x300A0741, "Interlock DateTime", "D", d="K"),
    _row(0x300A0742, "Interlock Description", "D", c="C"),
    _row(0x300A0783, "Interlock Origin Description", "D", c="C"),
    _row(0x40080111, "Interpretation Approver Sequence", "X"),
    _row(0x4008010C, "Interpretation Author", "X"),
    _row(0x40080115, "Interpretation Diagnosis Description", "X", c="C"),
    _row(0x40080202, "Interpretation ID Issuer", "X"),
    _row(0x40080102, "Interpretation Recorder", "X"),
    _row(0x4008010B, "Interpretation Text", "X", c="C"),
    _row(0x4008010A, "Interpretation Transcriber", "X"),
    _row(0x00083010, "Irradiation Event UID", "U", u="K"),
    _row(0x00380011, "Issuer of Admission ID", "X"),
    _row(0x00380014, "Issuer of Admission ID Sequence", "X"),
    _row(0x00100021, "Issuer of Patient ID", "X"),
    _row(0x00380061, "Issuer of Service Episode ID", "X"),
    _row(0x00380064, "Issuer of Service Episode ID Sequence", "X"),
    _row(0x00400513, "Issuer of the Container Identifier Sequence", "Z"),
    _row(0x00400562, "Issuer of the Specimen Identifier Sequence", "Z"),
    _row(0x22000002, "Label Text", "X/Z", c="C"),
    _row(0x00281214, "Large Palette Color Lookup Table UID", "U", u="K"),
    _row(0x001021D0, "Last Menstrual Date", "X", d="K"),
    _row(0x0016004F, "Lens Make", "X"),
    _row(0x00160050, "Lens Model", "X"),
    _row(0x00160051, "Lens Serial Number", "X"),
    _row(0x0016004E, "Lens Specification", "X"),
    _row(0x00500021, "Long Device Description", "X", c="C"),
    _row(0x04000404, "MAC", "X"),
    _row(0x0016002B, "Maker Note", "X", c="C"),
    _row(0x0018100B, "Manufacturer's Device Class UID", "U", u="K"),
    _row(0x30100043, "Manufacturer's Device Identifier", "Z"),
    _row(0x00020003, "Media Storage SOP Instance UID", "U", u="K"),
    _row(0x00102000, "Medical Alerts", "X", c="C"),
    _row(0x00101090, "Medical Record Locator", "X"),
    _row(0x00101080, "Military Rank", "X"),
    _row(0x04000550, "Modified Attributes Sequence", "X"),
    _row(0x00203406, "Modified Image Description", "X"),
    _row(0x00203401, "Modifying Device ID", "X"),
    _row(0x30080056, "Most Recent Treatment Date", "X/D", d="K"),
    _row(0x0018937B, "Multi-energy Acquisition Description", "X", c="C"),
    _row(0x003A0310, "Multiplex Group UID", "U", u="K"),
    _row(0x00081060, "Name of Physician(s) Reading Study", "X"),
    _row(0x00401010, "Names of Intended Recipients of Results", "X"),
    _row(0x04000551, "Nonconforming Modified Attributes Sequence", "X"),
    _row(0x04000552, "Nonconforming Data Element Value", "X"),
    _row(0x0040A192, "Observation Date (Trial)", "X", d="K"),
    _row(0x0040A402, "Observation Subject UID (Trial)", "U", u="K"),
    _row(0x0040A193, "Observation Time (Trial)", "X", d="K"),
    _row(0x0040A171, "Observation UID", "U", u="K"),
    _row(0x00102180, "Occupation", "X", c="C"),
    _row(0x00081072, "Operator Identification Sequence", "X/D"),
    _row(0x00081070, "Operators' Name", "X/Z/D"),
    _row(0x00402010, "Order Callback Phone Number", "X"),
    _row(0x00402011, "Order Callback Telecom Information", "X"),
    _row(0x00402008, "Order Entered By", "X"),
    _row(0x00402009, "Order Enterer's Location", "X"),
    _row(0x04000561, "Original Attributes Sequence", "X"),
    _row(0x00101000, "Other Patient IDs", "X"),
    _row(0x00101002, "Other Patient IDs Sequence", "X"),
    _row(0x00101001, "Other Patient Names", "X"),
    _row(0x00080024, "Overlay Date", "X", d="K"),
    _row(0x00080034, "Overlay Time", "X", d="K"),
    _row(0x300A0760, "Override DateTime", "D", d="K"),
    _row(0x00281199, "Palette Color Lookup Table UID", "U", u="K"),
    _row(0x0040A07A, "Participant Sequence", "X"),
    _row(0x00101040, "Patient's Address", "X"),
    _row(0x00101010, "Patient's Age", "X", p="K"),
    _row(0x00100030, "Patient's Birth Date", "Z"),
    _row(0x00101005, "Patient's Birth Name", "X"),
    _row(0x00100032, "Patient's Birth Time", "X"),
    _row(0x00380400, "Patient's Institution Residence", "X"),
    _row(0x00100050, "Patient's Insurance Plan Code Sequence", "X"),
    _row(0x00101060, "Patient's Mother's Birth Name", "X"),
    _row(0x00100010, "Patient's Name", "Z"),
    _row(0x00100101, "Patient's Primary Language Code Sequence", "X"),
    _row(0x00100102, "Patient's Primary Language Modifier Code Sequence", "X"),
    _row(0x001021F0, "Patient's Religious Preference", "X"),
    _row(0x00100040, "Patient's Sex", "Z", p="K"),
    _row(0x00102203, "Patient's Sex Neutered", "X/Z", p="K"),
    _row(0x00101020, "Patient's Size", "X", p="K"),
    _row(0x00102155, "Patient's Telecom Information", "X"),
    _row(0x00102154, "Patient's Telephone Numbers", "X"),
    _row(0x00101030, "Patient's Weight", "X", p="K"),
    _row(0x00104000, "Patient Comments", "X", c="C"),
    _row(0x00100020, "Patient ID", "Z"),
    _row(0x300A0650, "Patient Setup UID", "U", u="K"),
    _row(0x00380500, "Patient State", "X", p="C", c="C"),
    _row(0x00401004, "Patient Transport Arrangements", "X"),
    _row(0x00400243, "Performed Location", "X"),
    _row(0x00400254, "Performed Procedure Step Description", "X", c="C"),
    _row(0x00400250, "Performed Procedure Step End Date", "X", d="K"),
    _row(0x00404051, "Performed Procedure Step End DateTime", "X", d="K"),
    _row(0x00400251, "Performed Procedure Step End Time", "X", d="K"),
    _row(0x00400253, "Performed Procedure Step ID", "X"),
    _row(0x00400244, "Performed Procedure Step Start Date", "X", d="K"),
    _row(0x00404050, "Performed Procedure Step Start DateTime", "X", d="K"),
    _row(0x00400245, "Performed Procedure Step Start Time", "X", d="K"),
    _row(0x00400241, "Performed Station AE Title", "X"),
    _row(0x00404030, "Performed Station Geographic Location Code Sequence", "X"),
    _row(0x00400242, "Performed Station Name", "X"),
    _row(0x00404028, "Performed Station Name Code Sequence", "X"),
    _row(0x00081050, "Performing Physician's Name", "X"),
    _row(0x00081052, "Performing Physician Identification Sequence", "X"),
    _row(0x00401102, "Person's Address", "X"),
    _row(0x00401104, "Person's Telecom Information", "X"),
    _row(0x00401103, "Person's Telephone Numbers", "X"),
    _row(0x00401101, "Person Identification Code Sequence", "D"),
    _row(0x0040A123, "Person Name", "D"),
    _row(0x00081048, "Physician(s) of Record", "X"),
    _row(0x00081049, "Physician(s) of Record Identification Sequence", "X"),
    _row(0x00081062, "Physician(s) Reading Study Identification Sequence", "X"),
    _row(0x40080114, "Physician Approving Interpretation", "X"),
    _row(0x00402016, "Placer Order Number / Imaging Service Request", "Z"),
    _row(0x00181004, "Plate ID", "X"),
    _row(0x001021C0, "Pregnancy Status", "X", p="K"),
    _row(0x00400012, "Pre-Medication", "X", p="C"),
    _row(0x300A000E, "Prescription Description", "X", c="C"),
    _row(0x3010007B, "Prescription Notes", "Z", c="C"),
    _row(0x30100081, "Prescription Notes Sequence", "Z", c="C"),
    _row(0x00701101, "Presentation Display Collection UID", "U", u="K"),
    _row(0x00701102, "Presentation Sequence Collection UID", "U", u="K"),
    _row(0x30100061, "Prior Treatment Dose Description", "X", c="C"),
    _row(0x00404052, "Procedure Step Cancellation DateTime", "X", d="K"),
    _row(0x00181030, "Protocol Name", "X/D", c="C"),
    _row(0x300A0619, "Radiation Dose Identification Label", "D", c="C"),
    _row(0x300A0623, "Radiation Dose In-Vivo Measurement Label", "D", c="C"),
    _row(0x300A067D, "Radiation Generation Mode Description", "Z", c="C"),
    _row(0x300A067C, "Radiation Generation Mode Label", "D", c="C"),
    _row(0x300C0113, "Reason for Omission Description", "X", c="C"),
    _row(0x0040100A, "Reason for Requested Procedure Code Sequence", "X", c="C"),
    _row(0x00321030, "Reason for Study", "X", c="C"),
    _row(0x3010005C, "Reason for Superseding", "Z", c="C"),
    _row(0x00402001, "Reason for the Imaging Service Request", "X", c="C"),
    _row(0x00401002, "Reason for the Requested Procedure", "X", c="C"),
    _row(0x00321066, "Reason for Visit", "X", c="C"),
    _row(0x00321067, "Reason for Visit Code Sequence", "X", c="C"),
    _row(0x300A073A, "Recorded RT Control Point DateTime", "D", d="K"),
    _row(0x3010000B, "Referenced Conceptual Volume UID", "U", u="K"),
    _row(0x04000402, "Referenced Digital Signature Sequence", "X"),
    _row(0x300A0083, "Referenced Dose Reference UID", "U", u="K"),
    _row(0x3010006F, "Referenced Dosimetric Objective UID", "U", u="K"),
    _row(0x30100031, "Referenced Fiducials UID", "U", u="K"),
    _row(0x30060024, "Referenced Frame of Reference UID", "U", u="K"),
    _row(0x00404023, "Referenced General Purpose Scheduled Procedure Step Transaction UID", "U", u="K"),
    _row(0x00081140, "Referenced Image Sequence", "X/Z/U*", u="K"),
    _row(0x0040A172, "Referenced Observation UID (Trial)", "U", u="K"),
    _row(0x00380004, "Referenced Patient Alias Sequence", "X"),
    _row(0x00101100, "Referenced Patient Photo Sequence", "X"),
    _row(0x00081120, "Referenced Patient Sequence", "X", u="X"),
    _row(0x00081111, "Referenced Performed Procedure Step Sequence", "X/Z/D", u="K"),
    _row(0x04000403, "Referenced SOP Instance MAC Sequence", "X"),
    _row(0x00081155, "Referenced SOP Instance UID", "U", u="K"),
    _row(0x00041511, "Referenced SOP Instance UID in File", "U", u="K"),
    _row(0x00081110, "Referenced Study Sequence", "X/Z", u="K"),
    _row(0x00080092, "Referring Physician's Address", "X"),
    _row(0x00080090, "Referring Physician's Name", "Z"),
    _row(0x00080094, "Referring Physician's Telephone Numbers", "X"),
    _row(0x00080096, "Referring Physician Identification Sequence", "X"),
    _row(0x00102152, "Region of Residence", "X"),
    _row(0x300600C2, "Related Frame of Reference UID", "U", u="K"),
    _row(0x00400275, "Request Attributes Sequence", "X", c="C"),
    _row(0x00321070, "Requested Contrast Agent", "X", c="C"),
    _row(0x00401400, "Requested Procedure Comments", "X", c="C"),
    _row(0x00321060, "Requested Procedure Description", "X/Z", c="C"),
    _row(0x00401001, "Requested Procedure ID", "X"),
    _row(0x00401005, "Requested Procedure Location", "X"),
    _row(0x00189937, "Requested Series Description", "X", c="C"),
    _row(0x00001001, "Requested SOP Instance UID", "U", u="K"),
    _row(0x00321032, "Requesting Physician", "X"),
    _row(0x00321033, "Requesting Service", "X"),
    _row(0x00189185, "Respiratory Motion Compensation Technique Description", "X", c="C"),
    _row(0x00102299, "Responsible Organization", "X"),
    _row(0x00102297, "Responsible Person", "X"),
    _row(0x40084000, "Results Comments", "X", c="C"),
    _row(0x40080118, "Results Distribution List Sequence", "X"),
    _row(0x40080042, "Results ID Issuer", "X"),
    _row(0x300E0008, "Reviewer Name", "X/Z"),
    _row(0x30060028, "ROI Description", "X", c="C"),
    _row(0x30060038, "ROI Generation Description", "X", c="C"),
    _row(0x300600A6, "ROI Interpreter", "Z"),
    _row(0x30060026, "ROI Name", "Z", c="C"),
    _row(0x30060088, "ROI Observation Description", "X", c="C"),
    _row(0x30060085, "ROI Observation Label", "X", c="C"),
    _row(0x300A0615, "RT Accessory Device Slot ID", "Z"),
    _row(0x300A0611, "RT Accessory Holder Slot ID", "Z"),
    _row(0x3010005A, "RT Physician Intent Narrative", "Z", c="C"),
    _row(0x300A0006, "RT Plan Date", "X/D", d="K"),
    _row(0x300A0004, "RT Plan Description", "X", c="C"),
    _row(0x300A0002, "RT Plan Label", "D", c="C"),
    _row(0x300A0003, "RT Plan Name", "X", c="C"),
    _row(0x300A0007, "RT Plan Time", "X/D", d="K"),
    _row(0x30100054, "RT Prescription Label", "D", c="C"),
    _row(0x300A062A, "RT Tolerance Set Label", "D", c="C"),
    _row(0x30100056, "RT Treatment Approach Label", "X/D", c="C"),
    _row(0x3010003B, "RT Treatment Phase UID", "U", u="K"),
    _row(0x00404034, "Scheduled Human Performers Sequence", "X"),
    _row(0x0038001E, "Scheduled Patient Institution Residence", "X"),
    _row(0x00400006, "Scheduled Performing Physician's Name", "X"),
    _row(0x0040000B, "Scheduled Performing Physician Identification Sequence", "X"),
    _row(0x00400007, "Scheduled Procedure Step Description", "X", c="C"),
    _row(0x00400004, "Scheduled Procedure Step End Date", "X", d="K"),
    _row(0x00400005, "Scheduled Procedure Step End Time", "X", d="K"),
    _row(0x00404008, "Scheduled Procedure Step Expiration DateTime", "X", d="K"),
    _row(0x00400009, "Scheduled Procedure Step ID", "X"),
    _row(0x00400011, "Scheduled Procedure Step Location", "X"),
    _row(0x00404010, "Scheduled Procedure Step Modification DateTime", "X", d="K"),
    _row(0x00400002, "Scheduled Procedure Step Start Date", "X", d="K"),
    _row(0x00404005, "Scheduled Procedure Step Start DateTime", "X", d="K"),
    _row(0x00400003, "Scheduled Procedure Step Start Time", "X", d="K"),
    _row(0x00400001, "Scheduled Station AE Title", "X"),
    _row(0x00404027, "Scheduled Station Geographic Location Code Sequence", "X"),
    _row(0x00400010, "Scheduled Station Name", "X"),
    _row(0x00404025, "Scheduled Station Name Code Sequence", "X"),
    _row(0x00321020, "Scheduled Study Location", "X"),
    _row(0x00321021, "Scheduled Study Location AE Title", "X"),
    _row(0x00080021, "Series Date", "X/D", d="K"),
    _row(0x0008103E, "Series Description", "X", c="C"),
    _row(0x0020000E, "Series Instance UID", "U", u="K"),
    _row(0x00080031, "Series Time", "X/D", d="K"),
    _row(0x00380062, "Service Episode Description", "X", c="C"),
    _row(0x00380060, "Service Episode ID", "X"),
    _row(0x300A01B2, "Setup Technique Description", "X", c="C"),
    _row(0x300A01A6, "Shielding Device Description", "X", c="C"),
    _row(0x004006FA, "Slide Identifier", "X"),
    _row(0x001021A0, "Smoking Status", "X", p="K"),
    _row(0x00080018, "SOP Instance UID", "U", u="K"),
    _row(0x30100015, "Source Conceptual Volume UID", "U", u="K"),
    _row(0x0018936A, "Source End DateTime", "D", d="K"),
    _row(0x00340005, "Source Identifier", "D"),
    _row(0x00082112, "Source Image Sequence", "X/Z/U*", u="K"),
    _row(0x300A0216, "Source Manufacturer", "X"),
    _row(0x30080105, "Source Serial Number", "X/Z"),
    _row(0x00189369, "Source Start DateTime", "D", d="K"),
    _row(0x00380050, "Special Needs", "X", p="C"),
    _row(0x0040050A, "Specimen Accession Number", "X"),
    _row(0x00400602, "Specimen Detailed Description", "X", c="C"),
    _row(0x00400551, "Specimen Identifier", "D"),
    _row(0x00400610, "Specimen Preparation Sequence", "Z"),
    _row(0x00400600, "Specimen Short Description", "X", c="C"),
    _row(0x00400554, "Specimen UID", "U", u="K"),
    _row(0x00189516, "Start Acquisition DateTime", "X/D", d="K"),
    _row(0x00081010, "Station Name", "X/Z/D"),
    _row(0x00880140, "Storage Media File-set UID", "U", u="K"),
    _row(0x30060008, "Structure Set Date", "Z", d="K"),
    _row(0x30060006, "Structure Set Description", "X", c="C"),
    _row(0x30060002, "Structure Set Label", "D", c="C"),
    _row(0x30060004, "Structure Set Name", "X", c="C"),
    _row(0x30060009, "Structure Set Time", "X/D", d="K"),
    _row(0x00324000, "Study Comments", "X", c="C"),
    _row(0x00080020, "Study Date", "Z", d="K"),
    _row(0x00081030, "Study Description", "X", c="C"),
    _row(0x00200010, "Study ID", "Z"),
    _row(0x00320012, "Study ID Issuer", "X"),
    _row(0x0020000D, "Study Instance UID", "U", u="K"),
    _row(0x00080030, "Study Time", "Z", d="K"),
    _row(0x00200200, "Synchronization Frame of Reference UID", "U", u="K"),
    _row(0x00182042, "Target UID", "U", u="K"),
    _row(0x0040A354, "Telephone Number (Trial)", "X"),
    _row(0x0040DB0D, "Template Extension Creator UID", "U", u="K"),
    _row(0x0040DB0C, "Template Extension Organization UID", "U", u="K"),
    _row(0x40004000, "Text Comments", "X"),
    _row(0x20300020, "Text String", "X"),
    _row(0x00080201, "Timezone Offset From UTC", "X", d="K"),
    _row(0x00880910, "Topic Author", "X"),
    _row(0x00880912, "Topic Keywords", "X"),
    _row(0x00880906, "Topic Subject", "X"),
    _row(0x00880904, "Topic Title", "X"),
    _row(0x00620021, "Tracking UID", "U", u="K"),
    _row(0x00081195, "Transaction UID", "U", u="K"),
    _row(0x00185011, "Transducer Identification Sequence", "X"),
    _row(0x30080250, "Treatment Date", "X/D", d="K"),
    _row(0x300A00B2, "Treatment Machine Name", "X"),
    _row(0x300A0608, "Treatment Position Group Label", "D", c="C"),
    _row(0x300A0609, "Treatment Position Group UID", "U", u="K"),
    _row(0x300A0700, "Treatment Session UID", "U", u="K"),
    _row(0x30100077, "Treatment Site", "D", c="C"),
    _row(0x3010007A, "Treatment Technique Notes", "Z", c="C"),
    _row(0x30080251, "Treatment Time", "X/D", d="K"),
    _row(0x300A0736, "Treatment Tolerance Violation DateTime", "D", d="K"),
    _row(0x300A0734, "Treatment Tolerance Violation Description", "D", c="C"),
    _row(0x0018100A, "UDI Sequence", "X"),
    _row(0x0040A124, "UID", "U"),
    _row(0x00181009, "Unique Device Identifier", "X"),
    _row(0x30100033, "User Content Label", "D", c="C"),
    _row(0x30100034, "User Content Long Label", "D", c="C"),
    _row(0x0040A352, "Verbal Source (Trial)", "X"),
    _row(0x0040A358, "Verbal Source Identifier Code Sequence (Trial)", "X"),
    _row(0x0040A088, "Verifying Observer Identification Code Sequence", "Z"),
    _row(0x0040A075, "Verifying Observer Name", "D"),
    _row(0x0040A073, "Verifying Observer Sequence", "D"),
    _row(0x0040A027, "Verifying Organization", "D"),
    _row(0x00384000, "Visit Comments", "X", c="C"),
    _row(0x00189371, "X-Ray Detector ID", "D"),
    _row(0x00189373, "X-Ray Detector Label", "X"),
    _row(0x00189367, "X-Ray Source ID", "D"),
)
RULES: Mapping[int, Rule] = MappingProxyType({r.tag: r for r in _ROWS if r.tag is not None})

# The table's rows that are no single tag, and the rules hounsfield adds (each says why).
PRIVATE = Rule(None, "Private attributes (odd groups)", "X")
CURVE = Rule(None, "Curve Data (50xx,xxxx)", "X")
OVERLAY_DATA = Rule(None, "Overlay Data (60xx,3000)", "X")
OVERLAY_COMMENTS = Rule(None, "Overlay Comments (60xx,4000)", "X")
# Without its Overlay Data an Overlay Plane is incomplete (PS3.3 C.9.2: Type 1), and its Overlay Description
# and Overlay Label are free text: the rest of the group goes with it.
OVERLAY_PLANE = Rule(None, "Overlay Plane (60xx,eeee), whose Overlay Data is removed", "X")
# Group lengths (gggg,0000) would be wrong once the group changes; PS3.5 7.2 has them retired in datasets.
GROUP_LENGTH = Rule(None, "Group Length (gggg,0000)", "X")
# File Meta elements (0002,eeee) belong in the meta, which is written anew (E.1.1 item 7), never in the dataset.
FILE_META = Rule(None, "File Meta Information elements inside the dataset (0002,eeee)", "X")
# E.1.1 Note 4: dates and times by their VR (DA, DT, TM), not only the table's; and names of persons (PN).
DATE_TIME = Rule(None, "Other dates and times (DA, DT, TM)", "Z/D", MappingProxyType({Option.RETAIN_DATES: "K"}))
PERSON_NAME = Rule(None, "Other person names (PN)", "Z")
# DT values that are versions of coding resources, not dates of anyone's care: kept, so codes keep their meaning.
CODING_VERSION = Rule(None, "Context Group and Template (Local) Versions (DT)", "K")
_CODING_VERSIONS = frozenset({0x00080106, 0x00080107, 0x0040DB06, 0x0040DB07})
_OVERLAY_ELEMENTS = {0x3000: OVERLAY_DATA, 0x4000: OVERLAY_COMMENTS}


def rule_for(tag: int, vr: str) -> Rule | None:
    """The rule for an attribute (``None``: the profile does not name it, it is kept)."""
    group, element = tag >> 16, tag & 0xFFFF
    if group & 1:
        return PRIVATE
    if group == 0x0002:
        return FILE_META
    if element == 0:
        return GROUP_LENGTH
    if 0x5000 <= group <= 0x50FF:
        return CURVE
    if 0x6000 <= group <= 0x60FF:
        return _OVERLAY_ELEMENTS.get(element, OVERLAY_PLANE)
    rule = RULES.get(tag)
    if rule is not None:
        return rule
    if tag in _CODING_VERSIONS:
        return CODING_VERSION
    if vr in ("DA", "DT", "TM"):
        return DATE_TIME
    if vr == "PN":
        return PERSON_NAME
    return None


def parse_options(names: Iterable[str]) -> tuple[Option, ...]:
    """The options named (``retain-dates``…), in the order of ``Option``; an unknown name is an ``InvalidQuery``
    that names it and the options there are."""
    chosen = set()
    for name in names:
        try:
            chosen.add(Option(name.strip().lower()))
        except ValueError:
            known = ", ".join(o.value for o in Option)
            raise InvalidQuery(f"unsupported de-identification option {name[:64]!r}: the options are {known}") from None
    return tuple(o for o in Option if o in chosen)
