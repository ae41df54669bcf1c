"""On start-up, ask the worklist of the remote node RIS and log each item (Orthanc's canonical example)."""
from pydicom.dataset import Dataset

from hounsfield.plugins import api


@api.on_started
def ask_the_ris(ctx: api.Context) -> None:
    query = Dataset()
    query.PatientID = query.PatientName = query.AccessionNumber = ""
    query.ScheduledProcedureStepSequence = [Dataset()]
    for item in ctx.find_worklist("RIS", query):
        ctx.log.info("RIS worklist: %s %s, accession %s", item.PatientID, item.PatientName, item.AccessionNumber)
