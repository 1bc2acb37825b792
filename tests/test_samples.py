"""`digitcnn serve --samples DIR`: taught samples kept on the server, named by it, inside DIR, capped."""

import pytest
from fastapi.testclient import TestClient

from digitcnn import samples as samples_module
from digitcnn.folders import read_samples
from digitcnn.serve import create_app
from tests.test_serve import png_of


@pytest.fixture
def keeping(tmp_path, monkeypatch):
    monkeypatch.setattr(samples_module, "MAX_SAMPLES", 3)
    folder = tmp_path / "kept" / "samples"
    with TestClient(create_app(samples=folder), raise_server_exceptions=False) as client:
        yield client, folder


def send(client, label: str, data: bytes, name: str = "../../escape.png"):
    return client.post("/api/samples", data={"label": label}, files={"file": (name, data, "image/png")})


def test_samples_are_kept_under_names_the_server_makes_ready_for_finetune(keeping, mnist):
    client, folder = keeping
    (x_train, y_train), _ = mnist
    assert client.get("/api/health").json()["samples"] is True
    answer = send(client, str(y_train[0]), png_of(x_train[0]))
    assert answer.status_code == 200, answer.text
    saved = folder / answer.json()["saved"]
    assert saved.parent == folder / str(y_train[0]) and saved.suffix == ".png" and "escape" not in saved.name
    samples = read_samples(folder, class_names=[str(digit) for digit in range(10)])
    assert samples.labels.tolist() == [y_train[0]] and samples.problems == []


@pytest.mark.parametrize("label", ["../..", "..", ".", "../7", "7/../../x", "/tmp/7", "10", ""])
def test_a_label_that_is_not_a_class_is_refused_and_nothing_is_written(keeping, mnist, label):
    client, folder = keeping
    (x_train, _), _ = mnist
    answer = send(client, label, png_of(x_train[0]))
    assert answer.status_code == 422 and "error" in answer.json()
    assert [path for path in folder.parent.parent.rglob("*") if path.is_file()] == []


def test_only_readable_pngs_are_kept(keeping, mnist):
    client, folder = keeping
    assert send(client, "3", b"GIF89a not a png").status_code == 422
    assert send(client, "3", b"\x89PNG\r\n\x1a\n broken").status_code == 422
    assert not any(path.is_file() for path in folder.rglob("*"))


def test_the_folder_stops_at_its_cap(keeping, mnist):
    client, folder = keeping
    (x_train, y_train), _ = mnist
    statuses = [send(client, str(y_train[index]), png_of(x_train[index])).status_code for index in range(5)]
    assert statuses == [200, 200, 200, 507, 507]
    assert sum(path.is_file() for path in folder.rglob("*")) == 3


def test_without_samples_the_endpoint_is_off(mnist):
    (x_train, _), _ = mnist
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        assert client.get("/api/health").json()["samples"] is False
        assert send(client, "1", png_of(x_train[0])).status_code == 404
