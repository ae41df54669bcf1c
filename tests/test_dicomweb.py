"""DICOMweb (PS3.18) against a real server, through dicomweb-client and plain HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image

CT_DIR = "ct/philips_head_phantom_5mm"
OTHERS = ("mr/MR_small.dcm", "compressed/JPEG2000.dcm", "multiframe/eCT_Supplemental.dcm", "colour/SC_rgb.dcm")
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'


# ----------------------------------------------------------------------------------------------- helpers
def multipart_body(parts: list[tuple[str, bytes]], boundary: str = "test-boundary-42") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\nContent-Type: {ct}\r\n\r\n".encode() + data + b"\r\n" for ct, data in parts)
    return body + f"--{boundary}--\r\n".encode(), boundary


def stow(url: str, parts: list[tuple[str, bytes]], path: str = "/studies") -> requests.Response:
    body, boundary = multipart_body(parts)
    return requests.post(f"{url}/dicom-web{path}", data=body, timeout=120, headers={
        "Content-Type": f'{MULTIPART_DICOM}; boundary={boundary}', "Accept": "application/dicom+json"})


def split_multipart(resp: requests.Response) -> list[tuple[str, bytes]]:
    boundary = re.search(r'boundary="?([^";]+)"?', resp.headers["Content-Type"]).group(1).encode()
    out = []
    for chunk in resp.content.split(b"\r\n--" + boundary)[0:]:
        chunk = chunk.removeprefix(b"--" + boundary)
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        ctype = re.search(rb"Content-Type: ([^\r\n]+)", head).group(1).decode()
        out.append((ctype, body))
    return out


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently of hounsfield.imaging."""
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    y = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    y = np.where(values <= low, 0, np.where(values > high, 255, y))
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def count_instances(url: str) -> int:
    r = requests.get(f"{url}/dicom-web/instances", timeout=30)
    return 0 if r.status_code == 204 else len(r.json())


@pytest.fixture(scope="module")
def loaded(module_server, shared_data: Path):
    """The CT series STOWed as the files' own bytes (one request), the others through dicomweb-client; once per
    module and backend, on a server that holds nothing else (the tests using it only read)."""
    server = module_server
    ct_files = sorted((shared_data / CT_DIR).glob("*.dcm"))
    resp = stow(server.url, [("application/dicom", f.read_bytes()) for f in ct_files])
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert len(answer["00081199"]["Value"]) == len(ct_files) == 28
    assert "00081198" not in answer
    client = DICOMwebClient(url=f"{server.url}/dicom-web")
    others = [pydicom.dcmread(shared_data / f) for f in OTHERS]
    result = client.store_instances(others)
    assert len(result.ReferencedSOPSequence) == len(others)
    cts = [pydicom.dcmread(f) for f in ct_files]
    return {"client": client, "ct_files": ct_files, "ct": cts, "others": dict(zip(OTHERS, others)),
            "url": server.url}


# ----------------------------------------------------------------------------------------------- round trips
def test_qido_searches(loaded):
    client, ct, others = loaded["client"], loaded["ct"][0], loaded["others"]
    mr = others["mr/MR_small.dcm"]

    found = client.search_for_studies(search_filters={"PatientID": ct.PatientID})
    assert [s["0020000D"]["Value"][0] for s in found] == [ct.StudyInstanceUID]
    study = found[0]  # default return attributes, PS3.18 Table 6.7.1-2
    assert study["00201206"]["Value"] == [1] and study["00201208"]["Value"] == [28]
    assert study["00080061"]["Value"] == ["CT"]
    assert study["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{ct.StudyInstanceUID}")
    assert study["00100010"]["Value"][0]["Alphabetic"] == str(ct.PatientName)

    # tag as parameter name, date range, modality, wildcard name with fuzzy matching
    by_tag = client.search_for_studies(search_filters={"00100020": ct.PatientID})
    assert len(by_tag) == 1
    in_range = client.search_for_studies(search_filters={"StudyDate": "20150101-20151231"})
    assert {s["0020000D"]["Value"][0] for s in in_range} == {ct.StudyInstanceUID}
    mr_studies = client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})
    assert {s["0020000D"]["Value"][0] for s in mr_studies} == {mr.StudyInstanceUID}
    assert mr_studies[0]["00080061"]["Value"] == ["MR"]
    jp2 = others["compressed/JPEG2000.dcm"]
    either = client.search_for_studies(search_filters={"ModalitiesInStudy": "MR,NM"})
    assert {s["0020000D"]["Value"][0] for s in either} == {mr.StudyInstanceUID, jp2.StudyInstanceUID}
    fuzzy = client.search_for_studies(search_filters={"PatientName": "compressedsamples^m*"}, fuzzymatching=True)
    assert {s["0020000D"]["Value"][0] for s in fuzzy} == {mr.StudyInstanceUID}
    exact_case = client.search_for_studies(search_filters={"PatientName": "compressedsamples*"})
    assert exact_case == []

    # includefield: named attributes and all
    with_fields = client.search_for_studies(search_filters={"PatientID": ct.PatientID},
                                            fields=["StudyDescription", "00180050"])
    assert "00081030" in with_fields[0] and "00180050" in with_fields[0]
    everything = client.search_for_instances(ct.StudyInstanceUID, ct.SeriesInstanceUID, fields=["all"], limit=1)
    assert {"00280010", "00280030", "00200032"} <= set(everything[0])

    # levels: series of a study, instances of a study / series, all series, all instances
    series = client.search_for_series(ct.StudyInstanceUID)
    assert len(series) == 1 and series[0]["00201209"]["Value"] == [28]
    assert series[0]["00080060"]["Value"] == ["CT"]
    assert len(client.search_for_series(search_filters={"Modality": "CT"})) == 2  # CT phantom + eCT
    assert len(client.search_for_instances(ct.StudyInstanceUID)) == 28
    instances = client.search_for_instances(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert [i["00200013"]["Value"][0] for i in instances] == sorted(int(d.InstanceNumber) for d in loaded["ct"])
    assert len(client.search_for_instances()) == 28 + len(others)
    one = client.search_for_instances(search_filters={"SOPInstanceUID": ct.SOPInstanceUID})
    assert one[0]["0020000D"]["Value"] == [ct.StudyInstanceUID] and one[0]["0020000E"]["Value"] == [ct.SeriesInstanceUID]

    # paging
    pages = [client.search_for_instances(ct.StudyInstanceUID, limit=10, offset=o) for o in (0, 10, 20, 30)]
    assert [len(p) for p in pages] == [10, 10, 8, 0]
    paged = [i["00080018"]["Value"][0] for p in pages for i in p]
    assert paged == [i["00080018"]["Value"][0] for i in instances]

    # no match: 204
    r = requests.get(f"{loaded['url']}/dicom-web/studies", params={"PatientID": "nobody"})
    assert r.status_code == 204 and r.content == b""


def test_wado_retrieve_metadata_frames(loaded, shared_data):
    client, url = loaded["client"], loaded["url"]
    ct, path = loaded["ct"][3], loaded["ct_files"][3]
    base = f"{url}/dicom-web/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"

    # instance: the stored bytes unchanged
    r = requests.get(f"{base}/instances/{ct.SOPInstanceUID}", headers={"Accept": MULTIPART_DICOM})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("multipart/related")
    parts = split_multipart(r)
    assert len(parts) == 1 and parts[0][1] == path.read_bytes()
    assert "transfer-syntax=1.2.840.10008.1.2.1" in parts[0][0]
    # series: 28 parts, each one file's bytes
    r = requests.get(base, headers={"Accept": f"{MULTIPART_DICOM}; transfer-syntax=*"})
    by_bytes = {f.read_bytes() for f in loaded["ct_files"]}
    assert {body for _, body in split_multipart(r)} == by_bytes
    # through dicomweb-client: datasets equal
    got = client.retrieve_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert got.PixelData == ct.PixelData and got.SOPInstanceUID == ct.SOPInstanceUID
    study = client.retrieve_study(ct.StudyInstanceUID)
    assert sorted(d.SOPInstanceUID for d in study) == sorted(d.SOPInstanceUID for d in loaded["ct"])
    jp2 = loaded["others"]["compressed/JPEG2000.dcm"]
    got = client.retrieve_instance(jp2.StudyInstanceUID, jp2.SeriesInstanceUID, jp2.SOPInstanceUID)
    assert got.file_meta.TransferSyntaxUID == jp2.file_meta.TransferSyntaxUID and got.PixelData == jp2.PixelData

    # metadata: from the index, all instances of the series, BulkDataURIs resolve
    meta = client.retrieve_series_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert [m["00080018"]["Value"][0] for m in meta] == [
        d.SOPInstanceUID for d in sorted(loaded["ct"], key=lambda d: int(d.InstanceNumber))]
    one = client.retrieve_instance_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert pydicom.Dataset.from_json(one, lambda _uri: b"").PatientName == ct.PatientName
    assert len(client.retrieve_study_metadata(jp2.StudyInstanceUID)) == 1
    bulk = [(tag, v["BulkDataURI"]) for m in meta for tag, v in m.items() if "BulkDataURI" in v]
    if bulk:
        tag, uri = bulk[0]
        # dicomweb-client sends Host without the port: the URIs are then absolute paths on this server
        assert uri.startswith("/dicom-web/studies/")
        data = client.retrieve_bulkdata(url + uri)
        absolute = requests.get(f"{base}/metadata").json()
        assert all(v["BulkDataURI"].startswith(f"{url}/dicom-web/")
                   for m in absolute for v in m.values() if "BulkDataURI" in v)
        source = next(d for d in loaded["ct"] if uri.split("/instances/")[1].startswith(d.SOPInstanceUID))
        assert data[0] == source[int(tag, 16)].value

    # frames: uncompressed bytes equal to pydicom's decoded frame
    frames = client.retrieve_instance_frames(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, [1])
    assert frames[0] == ct.pixel_array.tobytes()
    ect = loaded["others"]["multiframe/eCT_Supplemental.dcm"]
    two = client.retrieve_instance_frames(ect.StudyInstanceUID, ect.SeriesInstanceUID, ect.SOPInstanceUID, [2, 1])
    assert two == [ect.pixel_array[1].tobytes(), ect.pixel_array[0].tobytes()]
    frames = client.retrieve_instance_frames(jp2.StudyInstanceUID, jp2.SeriesInstanceUID, jp2.SOPInstanceUID, [1])
    assert frames[0] == jp2.pixel_array.tobytes()


def test_rendered_and_thumbnail(loaded):
    url, ct = loaded["url"], loaded["ct"][10]
    base = f"{url}/dicom-web/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
    r = requests.get(f"{base}/instances/{ct.SOPInstanceUID}/rendered", params={"window": "40,400,linear"},
                     headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    png = np.asarray(Image.open(io.BytesIO(r.content)))
    hu = ct.pixel_array.astype(np.float64) * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    expected = linear_window(hu, 40, 400)
    assert png.shape == expected.shape
    assert int(np.abs(png.astype(int) - expected.astype(int)).max()) <= 1

    # a named preset (hounsfield extension): the lung preset is the PS3.3 linear window -600/1500
    r = requests.get(f"{base}/instances/{ct.SOPInstanceUID}/rendered", params={"preset": "lung"},
                     headers={"Accept": "image/png"})
    lung = np.asarray(Image.open(io.BytesIO(r.content)))
    assert int(np.abs(lung.astype(int) - linear_window(hu, -600, 1500).astype(int)).max()) <= 1
    r = requests.get(f"{base}/instances/{ct.SOPInstanceUID}/rendered", params={"preset": "nope"})
    assert r.status_code == 400 and "unknown preset" in r.json()["detail"]

    # frame form, JPEG via the accept query parameter, viewport
    r = requests.get(f"{base}/instances/{ct.SOPInstanceUID}/frames/1/rendered",
                     params={"accept": "image/jpeg", "viewport": "128,128", "window": "40,80"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) == 128
    client = loaded["client"]
    rendered = client.retrieve_instance_rendered(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID,
                                                 media_types=("image/png",))
    assert rendered.startswith(b"\x89PNG")

    for thumb in (f"{base}/thumbnail", f"{url}/dicom-web/studies/{ct.StudyInstanceUID}/thumbnail",
                  f"{base}/instances/{ct.SOPInstanceUID}/thumbnail"):
        r = requests.get(thumb)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/png", thumb
        assert max(Image.open(io.BytesIO(r.content)).size) <= 128

    r = requests.get(f"{base}/instances/{ct.SOPInstanceUID}/rendered", params={"window": "40,400,sigmoid"})
    assert r.status_code == 400 and "sigmoid" in r.json()["detail"]
    r = requests.get(f"{base}/instances/{ct.SOPInstanceUID}/rendered", headers={"Accept": "image/gif"})
    assert r.status_code == 406


# ----------------------------------------------------------------------------------------------- bad input
def test_stow_bad_input(server, shared_data):
    url = server.url
    mr_path = shared_data / "mr/MR_small.dcm"
    mr = pydicom.dcmread(mr_path)

    # 415: not multipart/related, or parts of another type
    r = requests.post(f"{url}/dicom-web/studies", data=mr_path.read_bytes(),
                      headers={"Content-Type": "application/dicom"})
    assert r.status_code == 415 and "multipart/related" in r.json()["detail"]
    body, boundary = multipart_body([("application/dicom+json", b"[]")])
    r = requests.post(f"{url}/dicom-web/studies", data=body,
                      headers={"Content-Type": f'multipart/related; type="application/dicom+json"; boundary={boundary}'})
    assert r.status_code == 415

    # malformed multipart: no boundary, truncated body
    r = requests.post(f"{url}/dicom-web/studies", data=b"garbage",
                      headers={"Content-Type": MULTIPART_DICOM})
    assert r.status_code == 400 and "boundary" in r.json()["detail"]
    body, boundary = multipart_body([("application/dicom", mr_path.read_bytes())])
    r = requests.post(f"{url}/dicom-web/studies", data=body[:-40],
                      headers={"Content-Type": f"{MULTIPART_DICOM}; boundary={boundary}"})
    assert r.status_code == 400 and "closing delimiter" in r.json()["detail"]
    assert count_instances(url) == 0

    # a non-DICOM part and a truncated part: FailedSOPSequence with 0xC000, nothing stored, 409
    truncated = (shared_data / "malformed/MR_truncated.dcm").read_bytes()
    r = stow(url, [("application/dicom", b"this is not DICOM at all" * 10), ("application/dicom", truncated)])
    assert r.status_code == 409
    failed = r.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000], [0xC000]]
    assert "00081199" not in r.json()
    assert count_instances(url) == 0

    # one good part and one bad part: 202, the good one stored with its RetrieveURL
    r = stow(url, [("application/dicom", mr_path.read_bytes()), ("application/dicom", b"\x00" * 300)])
    assert r.status_code == 202
    ok = r.json()["00081199"]["Value"]
    assert ok[0]["00081155"]["Value"] == [mr.SOPInstanceUID]
    retrieve_url = ok[0]["00081190"]["Value"][0]
    assert requests.get(retrieve_url).status_code == 200
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    assert count_instances(url) == 1

    # STOW to /studies/{S} with an instance of another study: 0xA900, not stored
    ct_path = sorted((shared_data / CT_DIR).glob("*.dcm"))[0]
    ct = pydicom.dcmread(ct_path, stop_before_pixels=True)
    r = stow(url, [("application/dicom", ct_path.read_bytes())], path=f"/studies/{mr.StudyInstanceUID}")
    assert r.status_code == 409
    item = r.json()["00081198"]["Value"][0]
    assert item["00081197"]["Value"] == [0xA900] and item["00081155"]["Value"] == [ct.SOPInstanceUID]
    assert count_instances(url) == 1
    r = stow(url, [("application/dicom", ct_path.read_bytes())], path=f"/studies/{ct.StudyInstanceUID}")
    assert r.status_code == 200 and count_instances(url) == 2


def test_bad_requests(server, shared_data):
    url = server.url
    mr = pydicom.dcmread(shared_data / "mr/MR_small.dcm")
    assert stow(url, [("application/dicom", (shared_data / "mr/MR_small.dcm").read_bytes())]).status_code == 200
    root = f"{url}/dicom-web"
    base = f"{root}/studies/{mr.StudyInstanceUID}/series/{mr.SeriesInstanceUID}"
    for bad in (f"{root}/studies/1.2.3", f"{root}/studies/1.2.3/metadata", f"{root}/studies/1.2.3/series/4.5",
                f"{base}/instances/9.9.9", f"{base}/instances/9.9.9/metadata", f"{base}/instances/9.9.9/frames/1",
                f"{base}/instances/9.9.9/rendered", f"{root}/studies/{mr.StudyInstanceUID}/series/4.5/metadata",
                f"{base}/instances/{mr.SOPInstanceUID}/frames/2"):
        r = requests.get(bad)
        assert r.status_code == 404, (bad, r.status_code, r.text)
        assert r.json()["error"] == "NotFound"
    for params, name in (({"limit": "-1"}, "limit"), ({"limit": "10000000000"}, "limit"), ({"limit": "x"}, "limit"),
                         ({"offset": "-5"}, "offset"), ({"offset": "1e99"}, "offset"),
                         ({"fuzzymatching": "maybe"}, "fuzzymatching"), ({"NoSuchKeyword": "1"}, "NoSuchKeyword"),
                         ({"includefield": "Bogus"}, "Bogus")):
        r = requests.get(f"{root}/studies", params=params)
        assert r.status_code == 400, params
        assert name in r.json()["detail"], (params, r.json())
    r = requests.get(f"{base}/instances/{mr.SOPInstanceUID}/frames/0")
    assert r.status_code == 400
    r = requests.get(f"{base}/instances/{mr.SOPInstanceUID}/frames/a,b")
    assert r.status_code == 400
    r = requests.get(f"{root}/studies/{mr.StudyInstanceUID}/metadata", headers={"Accept": "application/pdf"})
    assert r.status_code == 406


def test_cors(shared_server):
    """CORS is off unless origins are configured (issue 12; tests/test_http_security.py has the configured
    side): another origin gets no Access-Control-Allow-Origin, on /dicom-web or the REST API."""
    server = shared_server
    r = requests.options(f"{server.url}/dicom-web/studies", headers={
        "Origin": "http://ohif.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "accept"})
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(f"{server.url}/dicom-web/studies", headers={"Origin": "http://ohif.example"})
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(f"{server.url}/api/studies", headers={"Origin": "http://ohif.example"})
    assert "Access-Control-Allow-Origin" not in r.headers  # the REST API is not opened to other origins


# ----------------------------------------------------------------------------------------------- REST for the UI
def test_upload_zip_and_files(server, shared_data):
    import zipfile

    ct_files = sorted((shared_data / CT_DIR).glob("*.dcm"))[:5]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in ct_files:
            zf.write(f, f"folder/{f.name}")
        zf.writestr("folder/readme.txt", "not dicom")
        zf.writestr("__MACOSX/folder/._IM0001.dcm", "resource fork")
    files = [("files", ("scan.zip", buf.getvalue(), "application/zip")),
             ("files", ("MR_small.dcm", (shared_data / "mr/MR_small.dcm").read_bytes(), "application/dicom")),
             ("files", ("bad.dcm", b"nope", "application/octet-stream"))]
    r = requests.post(f"{server.url}/api/upload", files=files)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["stored"] == 6 and report["failed"] == 2
    outcome = {f["file"]: f["outcome"] for f in report["files"]}
    assert outcome["scan.zip/folder/IM0001.dcm"] == "stored"
    assert outcome["scan.zip/folder/readme.txt"] == "failed" and outcome["bad.dcm"] == "failed"
    assert not any("MACOSX" in name for name in outcome)
    assert count_instances(server.url) == 6
    r = requests.post(f"{server.url}/api/upload", files=[("files", ("bad.dcm", b"nope", "x/y"))])
    assert r.status_code == 400 and r.json()["failed"] == 1


def test_send_study_with_progress(server, shared_data, tmp_path):
    import time

    from support import Server

    ct_files = sorted((shared_data / CT_DIR).glob("*.dcm"))
    assert stow(server.url, [("application/dicom", f.read_bytes()) for f in ct_files]).status_code == 200
    study = pydicom.dcmread(ct_files[0], stop_before_pixels=True).StudyInstanceUID
    remote = Server(tmp_path / "remote", ae_title="REMOTE").start()
    try:
        r = requests.put(f"{server.url}/api/peers/remote", json={
            "name": "remote", "ae_title": "REMOTE", "host": "127.0.0.1", "port": remote.dicom_port})
        assert r.status_code == 200, r.text
        r = requests.post(f"{server.url}/api/studies/{study}/send", json={"peer": "remote"})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["total"] == 28
        seen = set()
        deadline = time.monotonic() + 120
        while job["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            job = requests.get(f"{server.url}/api/jobs/{job['id']}").json()
            seen.add(job["done"])
        assert job["state"] == "completed", f"{job}\n{server.log_text()[-3000:]}\n{remote.log_text()[-3000:]}"
        assert job["sent"] == 28 and job["failed"] == 0
        assert count_instances(remote.url) == 28
        assert requests.post(f"{server.url}/api/studies/{study}/send", json={"peer": "nope"}).status_code == 404
        assert requests.post(f"{server.url}/api/studies/1.2.3/send", json={"peer": "remote"}).status_code == 404
        assert requests.get(f"{server.url}/api/jobs/nope").status_code == 404
    finally:
        remote.stop()
    assert json.loads(requests.get(f"{server.url}/ui/api/presets").text)["lung"] == [-600.0, 1500.0]
