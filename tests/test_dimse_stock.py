"""The DICOM interop tests once more, on stock pynetdicom (``dicom_fast_path = false``).

hounsfield's fast paths replace pynetdicom internals (``dimse.fastpath``); when they are off — on purpose, or
because pynetdicom differs from the pinned release — stock pynetdicom serves, and must behave the same to
dcmtk's tools and pynetdicom clients. The tests are ``test_dimse_interop``'s own, on one server for the module
(in an order where what one stores does not change what another finds).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import test_dimse_interop as interop
from support import Server


def stock_server(data_dir: Path) -> Server:
    return Server(data_dir, env={"HOUNSFIELD_DICOM_FAST_PATH": "false"}).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = stock_server(tmp_path_factory.mktemp("stock") / "data")
    yield srv
    srv.stop()


@pytest.fixture
def other_server(server: Server) -> Server:
    """The module's one server (the tests below run in an order where that is enough)."""
    return server


ct_series = interop.ct_series

test_findscu_answers_match_the_stored_attributes = interop.test_findscu_answers_match_the_stored_attributes
test_findscu_matching_rules = interop.test_findscu_matching_rules
test_findscu_uid_list = interop.test_findscu_uid_list
test_getscu_returns_the_stored_files = interop.test_getscu_returns_the_stored_files
test_c_move_to_unknown_destination_is_refused = interop.test_c_move_to_unknown_destination_is_refused
test_c_find_with_missing_or_unknown_level = interop.test_c_find_with_missing_or_unknown_level
test_dataset_without_sop_instance_uid_gets_a_failure_status = \
    interop.test_dataset_without_sop_instance_uid_gets_a_failure_status
test_truncated_dataset_gets_a_failure_status = interop.test_truncated_dataset_gets_a_failure_status
test_association_dropped_mid_transfer_leaves_nothing_indexed = \
    interop.test_association_dropped_mid_transfer_leaves_nothing_indexed
test_c_cancel_stops_a_long_answer = interop.test_c_cancel_stops_a_long_answer
test_echoscu = interop.test_echoscu
# Last: it stores shared files, which the matching tests above would find too.
test_c_get_converts_for_a_receiver_that_takes_only_native = interop.test_c_get_converts_for_a_receiver_that_takes_only_native


def test_round_trip_of_every_shared_file(shared_data: Path, tmp_path: Path) -> None:
    """On a server of its own: the shared data holds the same instance in several syntaxes, and an archive
    keeps the first copy it was given (``duplicate_policy``)."""
    srv = stock_server(tmp_path / "data")
    try:
        interop.test_round_trip_of_every_shared_file(srv, shared_data, tmp_path)
    finally:
        srv.stop()


def test_the_server_runs_stock_pynetdicom(server: Server, tmp_path: Path) -> None:
    interop.test_echoscu(server)
    assert "DICOM fast paths off (dicom_fast_path = false)" in server.log_text()
