"""`digitcnn serve`: the draw-a-digit page and the JSON API over one model.

The model loads once per process; each request is read by the same `read_images` as `digitcnn predict`, off the
event loop: in a thread, or with `workers` > 1 in one of that many reader processes, so the server's own process
only speaks HTTP. Bad input is a 4xx with a JSON `error`, never a 500 or a traceback.
"""

import contextlib
import json
import os
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .errors import DigitcnnError
from .inference import load_model
from .inside import TUTORIAL_MODEL, layers_to_show, look_inside
from .pixels import SIDE
from .readers import ProcessReader, ThreadReader, status_for
from .recognize import read_images
from .runs import model_results
from .samples import SamplesFullError, SampleStore

# A phone photo is 2-6 MB as JPEG; a canvas drawing is a few kB. Bodies over the cap are refused from their
# Content-Length, or as soon as a streamed body passes it, without reading the rest.
MAX_BODY_BYTES = 5 * 1024 * 1024
# The page's own files, served by fixed name: no route ever opens a path a request names.
STATIC_FILES = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "inside.js": "text/javascript",
    "teach.js": "text/javascript",
}


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for a body over MAX_BODY_BYTES, by its declared length or as it streams in."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await send_json(send, 413, {"error": f"request body over the {self.limit:,}-byte cap"})
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge()
            return message

        return await self.app(scope, counting_receive, send)


async def send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def uploaded_image(request: Request) -> tuple[str | None, bytes]:
    """A request's image, as a multipart `file` field or the raw body: (its file name, its bytes)."""
    name, data = None, b""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise StarletteHTTPException(422, "multipart body without a 'file' field")
        name, data = upload.filename, await upload.read()
    else:
        data = await request.body()
    if not data:
        raise StarletteHTTPException(422, "empty body: send an image as multipart 'file' or raw")
    return name, data


# --- look inside (issue 19): the view's request work, its models and its route ---
def look_inside_one(model, data: bytes, name: str | None, digit: int | None = None) -> tuple[dict, int]:
    """One uploaded image -> (the "look inside" JSON, its HTTP status): /api/predict's answer for it, plus each
    layer's tiles, the input and the saliency (inside.InsideView.as_dict) of one digit, and `shown` (that digit's
    index, how many were read, its label and probabilities). A number shows digit `digit`, by default its last:
    writing left to right, the one just written."""
    reading = read_images(model, [data], names=[name])[0]
    answer = reading.as_dict()
    if reading.input is not None:
        crops = np.split(reading.input, reading.input.shape[1] // SIDE, axis=1)  # the digits read, side by side
        index = len(crops) - 1 if digit is None else min(max(digit, 0), len(crops) - 1)
        view = look_inside(model, crops[index])
        label = int(np.argmax(view.probabilities))
        answer.update(view.as_dict())
        answer["shown"] = {
            "digit": index,
            "of": len(crops),
            "label": label,
            "class_name": view.class_names[label],
            "confidence": round(float(view.probabilities[label]), 6),
            "probabilities": [round(float(value), 6) for value in view.probabilities],
        }
    return answer, status_for(reading.failure)


def inside_models(model, model_source) -> dict[str, tuple]:
    """The models the view can look into, by the name `?model=` gives: the served one as "default", and the
    tutorial's network as "seed" when this install ships it. Each with its results (test accuracy), if known."""
    results = model_results(model_source) if model_source else model_results(default_model_path())
    models = {"default": (model, results)}
    if TUTORIAL_MODEL.exists():
        models["seed"] = (load_model(TUTORIAL_MODEL), model_results(TUTORIAL_MODEL))
    return models


def add_inside_routes(app: FastAPI, models: dict[str, tuple]) -> None:
    """GET /api/inside lists the models the view can show; POST /api/inside?model=NAME looks inside one."""
    # Like ThreadReader: one image per core at a time, in this process (with --workers too: the view is rarer).
    slots = threading.BoundedSemaphore(os.cpu_count() or 1)

    def look_blocking(model, *request) -> tuple[dict, int]:
        with slots:
            return look_inside_one(model, *request)

    @app.get("/api/inside")
    async def api_inside_models() -> dict:
        """The models `POST /api/inside?model=NAME` can look into: their architecture, test accuracy, and whether
        they have layers to show (an ONNX model or an ensemble has not)."""
        listed = {}
        for name, (model, results) in models.items():
            try:
                layers_to_show(model)
                refusal = None
            except DigitcnnError as error:
                refusal = str(error)
            listed[name] = {
                "arch": model.config.arch,
                "test_accuracy": (results or {}).get("test_accuracy"),
                "layers": refusal is None,
                "error": refusal,
            }
        return {"models": listed}

    @app.post("/api/inside")
    async def api_inside(request: Request, model: str = "default", digit: int | None = None):
        """An image, sent as to /api/predict -> /api/predict's answer plus `layers` (each convolution block's and
        pooling step's name, label, shape, shown channels and uint8 tiles as base64), `input`, `saliency` and
        `shown`, for digit `digit` (0 is the leftmost) of a number, by default its last."""
        if model not in models:
            return JSONResponse(
                {"error": f"no model {model!r} to look inside; choose one of {', '.join(models)}"}, status_code=404
            )
        chosen = models[model][0]
        layers_to_show(chosen)  # an ONNX model or an ensemble is refused (422) before its image is read
        name, data = await uploaded_image(request)
        answer, status = await run_in_threadpool(look_blocking, chosen, data, name, digit)
        return JSONResponse(answer, status_code=status)


# --- end of look inside ---


def create_app(model_source: str | Path | None = None, workers: int = 1, samples: str | Path | None = None) -> FastAPI:
    """The app over the model at `model_source` (None: the shipped one), read in `workers` processes (1: threads
    of this one); with `samples`, the samples taught on the page are also kept in that folder."""
    model = load_model(model_source)
    store = SampleStore(samples, model.config.class_names) if samples is not None else None
    # Requests are single images: one core each, as many at once as there are cores. Two OpenMP threads per
    # image spin and wait for each other as soon as anything else wants a core (benchmarks/README.md, load).
    torch.set_num_threads(1)
    # Answers come from the model's ONNX twin when it has one (the shipped model does): single images run faster
    # on onnxruntime than on PyTorch (benchmarks.onnx_vs_torch); the look-inside view needs the PyTorch layers.
    if workers == 1:
        reader = ThreadReader(load_model(model_source, onnx_twin=True))
    else:  # each reader process loads it (readers.reader_main)
        reader = ProcessReader(model_source, workers)
    results = model_results(model_source) if model_source else model_results(default_model_path())
    health = {
        "status": "ok",
        "model": model.config.arch,
        "dataset": model.config.dataset,
        "classes": model.config.class_names,
        "version": __version__,
        "test_accuracy": (results or {}).get("test_accuracy"),
        "reader_processes": workers if workers > 1 else 0,
        "samples": store is not None,
    }
    static = resources.files("digitcnn") / "static"
    page = (static / "index.html").read_text()
    files = {name: (static / name).read_bytes() for name in STATIC_FILES}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await reader.start()
        yield
        reader.close()

    app = FastAPI(
        title="digitcnn", version=__version__, description="Reads handwritten digits from images.", lifespan=lifespan
    )
    app.add_middleware(BodyLimit)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request, error):
        return JSONResponse({"error": f"request body over the {MAX_BODY_BYTES:,}-byte cap"}, status_code=413)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request, error):  # the API's one error shape, not FastAPI's {"detail": [...]}
        problems = "; ".join(f"{'.'.join(map(str, each['loc'][1:]))}: {each['msg']}" for each in error.errors())
        return JSONResponse({"error": f"bad request: {problems}"}, status_code=422)

    @app.exception_handler(DigitcnnError)
    async def user_error(request, error):
        return JSONResponse({"error": str(error)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request, error):  # a bug of ours: say so without leaking a traceback
        return JSONResponse({"error": "internal error"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page)

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str):
        if name not in files:
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response(files[name], media_type=STATIC_FILES[name])

    @app.get("/api/health")
    async def api_health() -> dict:
        """The model being served, the package version, and the model's test accuracy when it is known."""
        return health

    @app.post("/api/predict")
    async def api_predict(request: Request, include_input: bool = False):
        """An image as a multipart `file` field or as the raw body -> the same JSON object as
        `digitcnn predict --json` prints (plus `input`, the 28x28 the model saw, with ?include_input=true)."""
        name, data = await uploaded_image(request)
        return await reader.read(data, name, include_input)

    # --- samples taught on the page (serve --samples DIR) ---
    @app.post("/api/samples")
    async def api_samples(request: Request):
        """A taught sample: multipart `label` and `file` (a PNG), kept as DIR/<label>/<name the server makes>.png."""
        if store is None:
            return JSONResponse({"error": "this server keeps no samples (serve --samples DIR)"}, status_code=404)
        form = await request.form(max_files=1, max_fields=4)
        label, upload = form.get("label"), form.get("file")
        if not isinstance(label, str) or upload is None or isinstance(upload, str):
            return JSONResponse({"error": "send multipart fields 'label' and 'file'"}, status_code=422)
        try:
            saved = await run_in_threadpool(store.save, label, await upload.read())
        except SamplesFullError as error:
            return JSONResponse({"error": str(error)}, status_code=507)
        return JSONResponse({"saved": saved, "count": store.count})

    # --- end of samples ---
    add_inside_routes(app, inside_models(model, model_source))

    return app


def default_model_path() -> Path:
    from .inference import SHIPPED_MODEL

    return SHIPPED_MODEL


def serve(model_source=None, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, samples=None) -> None:
    import uvicorn

    app = create_app(model_source, workers, samples)
    readers = f" and {workers} reader processes" if workers > 1 else ""
    print(f"digitcnn: serving on http://{host}:{port}/{readers} (Ctrl-C stops)", flush=True)
    # No access log: at this log level its lines were never printed, but each response still built one.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
