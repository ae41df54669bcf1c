"""The pynetdicom contract: the fast paths go in whole or not at all, and only on the release they are for.

Installing patches pynetdicom for the whole process, for good, so each case runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pynetdicom

from hounsfield.dimse import fastpath

PROBE = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import pynetdicom, pynetdicom.dul, pynetdicom.dimse_messages
{prepare}
from hounsfield.dimse import fastpath
active = fastpath.install({enabled})
from pynetdicom.dul import DULServiceProvider
from pynetdicom import association
print(json.dumps({{"active": active, "again": fastpath.install(True),
                   "patched_reader": hasattr(DULServiceProvider._read_pdu_data, "__wrapped__"),
                   "patched_time": getattr(association.time, "sleep", None) is not __import__("time").sleep}}))
"""


def probe(prepare: str = "", enabled: bool = True) -> tuple[dict, str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(prepare=prepare, enabled=enabled)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout), out.stderr


def test_the_installed_pynetdicom_is_the_pinned_one_and_has_everything() -> None:
    assert pynetdicom.__version__ == fastpath.PINNED
    assert fastpath.mismatches() == []


def test_on_the_pinned_release_every_fast_path_goes_in() -> None:
    state, _ = probe()
    assert state == {"active": True, "again": True, "patched_reader": True, "patched_time": True}


def test_another_release_falls_back_to_stock_pynetdicom_with_one_warning() -> None:
    state, log = probe('pynetdicom.__version__ = "3.1.0"')
    assert state == {"active": False, "again": False, "patched_reader": False, "patched_time": False}
    warnings = [line for line in log.splitlines() if "fast paths off" in line]
    assert len(warnings) == 1 and "pynetdicom 3.1.0 is installed" in warnings[0] and "WARNING" in warnings[0]


def test_a_missing_internal_falls_back_to_stock_pynetdicom() -> None:
    state, log = probe("del pynetdicom.dimse_messages.create_file_meta")
    assert state["active"] is False and state["patched_reader"] is False
    assert "pynetdicom.dimse_messages.create_file_meta is missing" in log


def test_a_changed_internal_falls_back_to_stock_pynetdicom() -> None:
    state, log = probe("pynetdicom.dul.DULServiceProvider.run_reactor = lambda self: None")
    assert state["active"] is False and state["patched_time"] is False
    assert "run_reactor" in log


def test_the_setting_turns_them_off_on_purpose() -> None:
    state, log = probe(enabled=False)
    assert state == {"active": False, "again": False, "patched_reader": False, "patched_time": False}
    assert "dicom_fast_path = false" in log and "WARNING" not in log


def test_the_mismatch_report_names_the_version() -> None:
    assert fastpath.mismatches("9.9.9") == [f"pynetdicom 9.9.9 is installed, the fast paths are written for "
                                            f"{fastpath.PINNED}"]
    assert json.dumps(fastpath.INTERNALS)  # plain data, for the log and the docs


def test_supported_contexts_copy_like_deepcopy_at_a_fraction_of_the_work() -> None:
    """Each association gets its own copy of the server's contexts (pynetdicom deep-copies them); the cheap
    copy must be the same copy: equal contexts, lists of their own."""
    import copy

    from pynetdicom import AE, AllStoragePresentationContexts

    from hounsfield.dimse.server import STORAGE_SYNTAXES
    from hounsfield.dimse.tuning import _SupportedContexts

    ae = AE()
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, STORAGE_SYNTAXES, scp_role=True, scu_role=True)
    contexts = ae.supported_contexts
    reference, cheap = copy.deepcopy(contexts), copy.deepcopy(_SupportedContexts(contexts))

    def attrs(cx):  # noqa: ANN001, ANN202
        return (cx.context_id, cx.abstract_syntax, cx.transfer_syntax, cx.scu_role, cx.scp_role, cx.result,
                cx.as_scu, cx.as_scp)

    assert [attrs(cx) for cx in cheap] == [attrs(cx) for cx in reference] == [attrs(cx) for cx in contexts]
    assert all(a is not b and a._transfer_syntax is not b._transfer_syntax for a, b in zip(cheap, contexts))
    cheap[0].transfer_syntax = [STORAGE_SYNTAXES[0]]  # negotiation may change a copy: never the server's
    assert contexts[0].transfer_syntax == STORAGE_SYNTAXES
