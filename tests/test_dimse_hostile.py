"""The DICOM port against peers that break the protocol: half-sent PDUs, lengths nobody sends, PDUs on
presentation contexts that were not accepted, an MPPS N-CREATE without attributes.

One real server for the module, with a 2 s ``dicom_read_timeout``, at most 4 associations and one DICOM process
(so that every connection counts against the same slots). The hostile peers are raw sockets with hand-made PDUs
(PS3.8 9.3); pynetdicom is the well-behaved peer that must still be served. Tests wait for events (the server
closing a socket, an association accepted, a log line) with generous deadlines, which only fail a test when the
event never comes. The server's slots are freed shortly after the events the tests wait for, so every
association here is retried while it is refused for the local limit.
"""

from __future__ import annotations

import io
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, ModalityPerformedProcedureStep, Verification

from support import Server, free_port

READ_TIMEOUT = 2  # seconds (dicom_read_timeout)
PATIENCE = 60.0  # seconds an awaited event may take before the test fails
HALF_OPEN = 24  # sockets, six times the server's slots
A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ABORT = 0x02, 0x03, 0x07
LOCAL_LIMIT = b"\x02\x03\x02"  # A-ASSOCIATE-RJ: rejected-transient, service provider (presentation), local limit
UNKNOWN_CONTEXT = 99  # odd, as presentation context IDs are, and never proposed


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("hostile") / "data", env={
        "HOUNSFIELD_DICOM_READ_TIMEOUT": str(READ_TIMEOUT), "HOUNSFIELD_MAX_ASSOCIATIONS": "4",
        "HOUNSFIELD_DICOM_PROCESSES": "1"}).start()
    try:
        yield srv
    finally:
        srv.stop()


def associate_rq(*abstract_syntaxes: str, called: str = "HOUNSFIELD") -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing one context per SOP class (IDs 1, 3, 5...), as pynetdicom encodes it."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "HOSTILE"
    primitive.called_ae_title = called
    contexts = []
    for i, sop_class in enumerate(abstract_syntaxes):
        context = build_context(sop_class, [ImplicitVRLittleEndian])
        context.context_id = 2 * i + 1
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0"
    primitive.user_information = [max_length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def p_data_tf(*pdvs: tuple[int, int, bytes]) -> bytes:
    """A P-DATA-TF PDU (PS3.8 9.3.5) of (context ID, message control header, fragment) items."""
    items = b"".join(struct.pack(">LBB", len(data) + 2, cid, control) + data for cid, control, data in pdvs)
    return struct.pack(">BBL", 0x04, 0, len(items)) + items


def command_set(primitive: C_ECHO | C_STORE) -> bytes:
    """The command set pynetdicom encodes for a DIMSE request."""
    message = {C_STORE: C_STORE_RQ, C_ECHO: C_ECHO_RQ}[type(primitive)]()
    message.primitive_to_message(primitive)
    return b"".join(bytes(data[1:]) for pdata in message.encode_msg(1, 0)
                    for _, data in pdata.presentation_data_value_list if data[0] & 1)


def store_request(sop_instance_uid: str) -> bytes:
    """A C-STORE-RQ command set for a CT image (its data set to follow)."""
    rq = C_STORE()
    rq.MessageID = 1
    rq.AffectedSOPClassUID = CTImageStorage
    rq.AffectedSOPInstanceUID = sop_instance_uid
    rq.Priority = 2
    rq.DataSet = io.BytesIO(b"\x08\x00\x16\x00")  # a data set follows
    return command_set(rq)


def echo_request() -> bytes:
    """A C-ECHO-RQ command set."""
    rq = C_ECHO()
    rq.MessageID = 1
    rq.AffectedSOPClassUID = Verification
    return command_set(rq)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened within {PATIENCE:.0f} s: {what}")
        time.sleep(0.05)


def connect(server: Server, sent: bytes = b"") -> socket.socket:
    """A connection to the server that has sent ``sent`` (at once: a connection that sends nothing is closed
    when the ARTIM timer expires, and the listening socket's short backlog can make connecting slow)."""
    sock = socket.create_connection(("127.0.0.1", server.dicom_port), timeout=PATIENCE)
    sock.sendall(sent)
    return sock


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    deadline = time.monotonic() + PATIENCE
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the server kept the connection from port {sock.getsockname()[1]} open "
                        f"for {PATIENCE:.0f} s")
        if not chunk:
            return received
        received += chunk


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """The next PDU from the server: (type, what follows the header)."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the server closed the connection"
            data += chunk
        return data

    pdu_type, _, length = struct.unpack(">BBL", exactly(6))
    return pdu_type, exactly(length)


def send_whole(sock: socket.socket, pdu: bytes) -> None:
    sock.sendall(pdu)


def established(server: Server, *abstract_syntaxes: str,
                send: Callable[[socket.socket, bytes], None] = send_whole) -> socket.socket:
    """A raw socket with an association established (retried while the server refuses it: local limit)."""
    deadline = time.monotonic() + PATIENCE
    while True:
        sock = connect(server)
        send(sock, associate_rq(*abstract_syntaxes))
        pdu_type, body = read_pdu(sock)
        if pdu_type == A_ASSOCIATE_AC:
            return sock
        sock.close()
        assert pdu_type == A_ASSOCIATE_RJ and body[1:4] == LOCAL_LIMIT, f"PDU 0x{pdu_type:02X} {body!r}"
        if time.monotonic() > deadline:
            pytest.fail(f"no association accepted within {PATIENCE:.0f} s")
        time.sleep(0.1)


def associated(ae: AE, port: int, ae_title: str) -> Association:
    """A pynetdicom association, retried while the server refuses it (local limit)."""
    deadline = time.monotonic() + PATIENCE
    while not (assoc := ae.associate("127.0.0.1", port, ae_title=ae_title)).is_established:
        if time.monotonic() > deadline:
            pytest.fail(f"no association accepted by {ae_title} within {PATIENCE:.0f} s")
        time.sleep(0.1)
    return assoc


def echo(port: int, ae_title: str = "HOUNSFIELD") -> int:
    """pynetdicom's C-ECHO status."""
    ae = AE(ae_title="WELLBEHAVED")
    ae.add_requested_context(Verification)
    assoc = associated(ae, port, ae_title)
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status)


def logged(server: Server, *parts: str) -> bool:
    """Whether one line of the server's log has all of ``parts``."""
    return any(all(part in line for part in parts) for line in server.log_text().splitlines())


def incoming(server: Server) -> list[Path]:
    """The files of instances still arriving (DATA_DIR/files/.incoming)."""
    return list((server.data_dir / "files" / ".incoming").iterdir())


def aborts(data: bytes) -> bool:
    """Whether ``data`` is exactly one A-ABORT PDU (PS3.8 9.3.8)."""
    return len(data) == 10 and data[0] == A_ABORT and data[2:6] == b"\x00\x00\x00\x04"


def test_half_sent_association_requests_do_not_lock_out_other_peers(server: Server) -> None:
    request = associate_rq(Verification)
    sockets = [connect(server, request[:60]) for _ in range(HALF_OPEN)]
    assert echo(server.dicom_port) == 0x0000  # served while the half-open sockets are still open on this side
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        assert until_closed(sock) == b""  # Sta2, the ARTIM timer's expiry: the connection closed (AA-2)
        sock.close()
    for port in ports:
        wait_for(lambda port=port: logged(server, "WARNING hounsfield.dimse", f"127.0.0.1:{port} sent 60 of the "
                                          f"{len(request)} bytes of an A-ASSOCIATE-RQ PDU"),
                 f"the warning naming port {port}")


def test_a_header_announcing_4_gb_is_refused_at_once(server: Server) -> None:
    sockets = [connect(server, struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF)) for _ in range(HALF_OPEN)]
    for sock in sockets:
        port = sock.getsockname()[1]
        assert aborts(until_closed(sock))  # invalid PDU in Sta2: A-ABORT (AA-1), then the close
        sock.close()
        wait_for(lambda port=port: logged(server, "A-ASSOCIATE-RQ PDU of 4294967301 bytes announced by "
                                          f"127.0.0.1:{port}"),
                 f"the error naming port {port}")
    assert echo(server.dicom_port) == 0x0000


@pytest.mark.parametrize("sent, what", [
    (struct.pack(">BBL", 0x04, 0, 200) + b"\x00" * 50, "56 of the 206 bytes of a P-DATA-TF PDU"),
    (b"\x04\x00\x00", "3 of the 6 bytes of a PDU header"),
], ids=["body", "header"])
def test_a_half_sent_pdu_after_association_is_aborted(server: Server, sent: bytes, what: str) -> None:
    sock = established(server, Verification)
    port = sock.getsockname()[1]
    sock.sendall(sent)
    data = until_closed(sock)
    sock.close()
    assert aborts(data) and data[8] == 0x02  # A-ABORT from the service provider (AA-8)
    wait_for(lambda: logged(server, "WARNING hounsfield.dimse", f"127.0.0.1:{port} sent {what} and not the rest"),
             f"the warning naming port {port}")
    assert echo(server.dicom_port) == 0x0000


def test_a_c_store_broken_off_by_a_half_sent_pdu_leaves_no_file(server: Server) -> None:
    sock = established(server, CTImageStorage)  # context 1
    port = sock.getsockname()[1]
    sock.sendall(p_data_tf((1, 0x03, store_request(generate_uid()))))
    wait_for(lambda: len(incoming(server)) == 1, "the instance's file in .incoming")
    sock.sendall(p_data_tf((1, 0x02, b"\x08\x00\x16\x00" * 64))[:100])
    data = until_closed(sock)
    sock.close()
    assert aborts(data) and data[8] == 0x02
    wait_for(lambda: logged(server, f"127.0.0.1:{port} sent 100 of the 268 bytes of a P-DATA-TF PDU"),
             f"the warning naming port {port}")
    assert incoming(server) == []


def test_a_pdu_sent_in_parts_within_the_read_timeout_is_read_whole(server: Server) -> None:
    def slowly(sock: socket.socket, pdu: bytes) -> None:
        for part in (pdu[:3], pdu[3:60], pdu[60:]):
            sock.sendall(part)
            time.sleep(0.2)  # a slow peer, well within the read timeout

    established(server, Verification, send=slowly).close()


@pytest.mark.parametrize("request_pdvs", [
    lambda: [(UNKNOWN_CONTEXT, 0x03, store_request(generate_uid())), (UNKNOWN_CONTEXT, 0x02, b"\x08\x00" * 8)],
    lambda: [(UNKNOWN_CONTEXT, 0x03, echo_request())],
], ids=["c-store", "c-echo"])
def test_a_p_data_tf_on_a_context_not_accepted_is_aborted(
        server: Server, request_pdvs: Callable[[], list[tuple[int, int, bytes]]]) -> None:
    sock = established(server, Verification, CTImageStorage)  # contexts 1 and 3
    port = sock.getsockname()[1]
    sock.sendall(p_data_tf(*request_pdvs()))
    data = until_closed(sock)
    sock.close()
    assert aborts(data) and data[8] == 0x02  # invalid PDU parameter: A-ABORT from the service provider (AA-8)
    wait_for(lambda: logged(server, f"P-DATA-TF from 127.0.0.1:{port} on presentation context {UNKNOWN_CONTEXT}, "
                            "which was not accepted"), f"the error naming port {port}")
    assert incoming(server) == []
    assert echo(server.dicom_port) == 0x0000


def test_an_mpps_n_create_without_attributes_is_refused_missing_attribute(server: Server) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = associated(ae, server.dicom_port, server.ae_title)
    status, _ = assoc.send_n_create(None, ModalityPerformedProcedureStep, generate_uid())
    assoc.release()
    assert status is not None and int(status.Status) == 0x0120  # Missing Attribute (PS3.7 C.5)
    wait_for(lambda: logged(server, "WARNING", "MPPS N-CREATE from MODALITY refused (0x0120)"), "the warning")


STOCK_SCP = textwrap.dedent("""
    import sys
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification
    from hounsfield.dimse.store_receive import bound_socket_reads

    ae = AE(ae_title="STOCK")
    ae.acse_timeout = float(sys.argv[2])
    ae.add_supported_context(Verification)
    ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_CONN_OPEN, bound_socket_reads)])
""")


def test_pynetdicoms_own_reader_gives_up_on_a_half_sent_pdu(tmp_path: Path) -> None:
    """The fast paths off: stock pynetdicom reads (an SCP of its own, none of hounsfield's reader installed),
    and ``bound_socket_reads`` makes it give up on a half-sent PDU; it still serves a well-behaved peer after."""
    port = free_port()
    log_path = tmp_path / "stock.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", STOCK_SCP, str(port), str(READ_TIMEOUT)], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            assert proc.poll() is None, log_path.read_text()
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, "the stock SCP listening")
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(associate_rq(Verification, called="STOCK")[:60])
            assert until_closed(sock) == b""
        assert proc.poll() is None and echo(port, "STOCK") == 0x0000
    finally:
        proc.terminate()
        proc.wait(PATIENCE)
