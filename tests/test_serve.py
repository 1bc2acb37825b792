"""The JSON API: real digits and every kind of bad request, through an HTTP client against the app and against
the real server process."""

import io
import json
import os
import signal

import httpx
import numpy as np
import pytest
from benchmarks.load import server_family
from fastapi.testclient import TestClient
from PIL import Image

from digitcnn.serve import MAX_BODY_BYTES, create_app
from tests.conftest import ANSWER_FIELDS, serving
from tests.test_preprocess import png_header_only


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        yield test_client


def png_of(pixels: np.ndarray, size: int = 140, dark_ink: bool = True) -> bytes:
    image = Image.fromarray(255 - pixels if dark_ink else pixels).resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_real_digits_get_their_labels_as_multipart_and_as_raw_bodies(client, mnist):
    _, (x_test, y_test) = mnist
    for index in range(10):
        body = png_of(x_test[index])
        multipart = client.post("/api/predict", files={"file": (f"{index}.png", body, "image/png")})
        raw = client.post("/api/predict", content=body, headers={"content-type": "image/png"})
        assert multipart.status_code == raw.status_code == 200
        answer = multipart.json()
        assert answer["label"] == int(y_test[index]) and answer["file"] == f"{index}.png"
        assert raw.json()["probabilities"] == answer["probabilities"] and raw.json()["file"] is None
        assert set(answer) == ANSWER_FIELDS


def test_the_answer_is_what_the_cli_prints(client, mnist, tmp_path):
    from tests.conftest import run_cli

    _, (x_test, _) = mnist
    path = tmp_path / "digit.png"
    path.write_bytes(png_of(x_test[3]))
    printed = json.loads(run_cli("predict", "--json", path, check=True).stdout)
    answered = client.post("/api/predict", files={"file": (str(path), path.read_bytes())}).json()
    assert answered == printed


def test_the_model_input_comes_back_on_request(client, mnist):
    _, (x_test, _) = mnist
    answer = client.post("/api/predict?include_input=true", content=png_of(x_test[0])).json()
    seen = np.array(answer["input"])
    assert seen.shape == (28, 28) and seen.min() >= 0 and seen.max() <= 1 and seen.max() > 0.9


def test_a_blank_canvas_is_an_unsure_answer_not_an_error(client):
    buffer = io.BytesIO()
    Image.new("RGBA", (280, 280), (255, 255, 255, 255)).save(buffer, "PNG")
    response = client.post("/api/predict", files={"file": ("canvas.png", buffer.getvalue())})
    assert response.status_code == 200
    answer = response.json()
    assert answer["label"] is None and answer["unsure"] is True and answer["error"] == "no digit found"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"hello, this is text", 415, "not an image"),
        (b"P5\n4 4\n255\n" + bytes(16), 415, "unsupported image format"),
        (png_header_only(64, 64)[:40], 422, "truncated"),
        (png_header_only(30_000, 30_000), 413, "pixel cap"),
        (b"", 422, "empty body"),
    ],
)
def test_bad_images_are_4xx_with_a_json_error(client, body, status, message):
    for response in (
        client.post("/api/predict", content=body),
        client.post("/api/predict", files={"file": ("upload.bin", body)}),
    ):
        assert response.status_code == status
        assert message in response.json()["error"] and "Traceback" not in response.text


def test_malformed_requests_are_4xx_never_500(client):
    no_file = client.post("/api/predict", data={"name": "x"}, files={"other": ("a.png", b"123")})
    assert no_file.status_code == 422 and "file" in no_file.json()["error"]
    assert client.get("/api/predict").status_code == 405
    bad_parameter = client.post("/api/predict?include_input=maybe", content=b"x")
    assert bad_parameter.status_code == 422 and set(bad_parameter.json()) == {"error"}
    assert "include_input" in bad_parameter.json()["error"]
    assert client.get("/static/../serve.py").status_code == 404
    assert client.get("/static/index.html").status_code == 404  # only the page's own assets, by fixed name
    assert client.get("/no/such/page").json() == {"error": "Not Found"}


def test_health_names_the_model_and_its_test_accuracy(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["model"] == "best" and health["classes"][7] == "7"
    assert health["test_accuracy"] > 0.99
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_the_page_and_its_assets_are_served_without_outside_resources(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    for text in (page.text, client.get("/static/app.js").text, client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text  # no CDN: everything from this server


def test_the_real_server_caps_bodies_by_length_and_while_streaming(live_server, mnist):
    _, (x_test, y_test) = mnist
    good = httpx.post(f"{live_server}/api/predict", files={"file": ("d.png", png_of(x_test[1]))})
    assert good.status_code == 200 and good.json()["label"] == int(y_test[1])
    declared = httpx.post(f"{live_server}/api/predict", content=b"\0" * (MAX_BODY_BYTES + 1))
    assert declared.status_code == 413 and "cap" in declared.json()["error"]

    def chunks():  # no Content-Length: the server must count as the body streams in
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"\0" * 65536

    streamed = httpx.post(f"{live_server}/api/predict", content=chunks())
    assert streamed.status_code == 413 and "cap" in streamed.json()["error"]
    assert httpx.get(f"{live_server}/api/health").json()["status"] == "ok"  # and it goes on serving


def test_several_worker_processes_serve_the_same_answers(client, mnist):
    _, (x_test, y_test) = mnist
    with serving("--workers", 2) as url:
        responses = [httpx.post(f"{url}/api/predict", content=png_of(x_test[index])) for index in range(6)]
        health = httpx.get(f"{url}/api/health").json()
        assert len(reader_processes(url)) == 2
    assert health["model"] == "best" and health["reader_processes"] == 2
    assert [response.json()["label"] for response in responses] == y_test[:6].tolist()
    # The reader processes encode the answer themselves: byte for byte what threads of the server send.
    in_threads = [client.post("/api/predict", content=png_of(x_test[index])) for index in range(6)]
    assert [response.content for response in responses] == [response.content for response in in_threads]
    assert {response.headers["content-type"] for response in responses + in_threads} == {"application/json"}


def test_a_reader_process_that_dies_costs_one_503_and_the_server_goes_on(mnist):
    _, (x_test, y_test) = mnist
    with serving("--workers", 2) as url:
        first = reader_processes(url)
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        lost = httpx.post(f"{url}/api/predict", content=png_of(x_test[0]))
        assert lost.status_code == 503 and "reader" in lost.json()["error"]
        again = httpx.post(f"{url}/api/predict", content=png_of(x_test[1]), timeout=60)
        assert again.status_code == 200 and again.json()["label"] == y_test[1]
        assert not set(first) & set(reader_processes(url))


def reader_processes(url: str) -> list[int]:
    """The pids of the reader processes of the `digitcnn serve` listening at `url`: its spawned children."""
    port = url.rsplit(":", 1)[1]

    def command_line(pid: int | str) -> list[str]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                return handle.read().decode().split("\0")
        except OSError:  # a process that ended while we looked
            return []

    pids = [name for name in os.listdir("/proc") if name.isdigit()]
    server = int(next(pid for pid in pids if "serve" in command_line(pid) and port in command_line(pid)))
    return [pid for pid in server_family(server) if "spawn_main" in " ".join(command_line(pid))]
