"""Where `digitcnn serve` reads a request's image: in threads of the server's own process, or in reader processes
that each hold the model and talk to the server over a socket of their own.

A reader process answers with the response body already encoded as JSON, so the server's process, the one that
speaks HTTP for every request, only moves bytes.
"""

import asyncio
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import threading

import torch
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from .errors import DigitcnnError, ImageTooLargeError, NoDigitError, UnsupportedImageError
from .inference import load_model
from .recognize import read_images

# Each message between the server and a reader: its length, then that many bytes of pickle.
MESSAGE_LENGTH = struct.Struct("!Q")
READER_STOPPED = {"error": "a reader process stopped; send the image again"}


def status_for(failure: Exception | None) -> int:
    """The HTTP status of one image's outcome: a blank page is an answer (200), the rest are the sender's fault."""
    if failure is None or isinstance(failure, NoDigitError):
        return 200
    if isinstance(failure, ImageTooLargeError):
        return 413
    return 415 if isinstance(failure, UnsupportedImageError) else 422


def read_one(model, data: bytes, name: str | None, include_input: bool) -> tuple[dict, int]:
    """One uploaded image -> (the JSON answer, its HTTP status): the whole of a request's work but HTTP."""
    reading = read_images(model, [data], names=[name])[0]
    answer = reading.as_dict()
    if include_input and reading.input is not None:
        answer["input"] = [[round(float(value), 3) for value in row] for row in reading.input]
    return answer, status_for(reading.failure)


class ThreadReader:
    """Reads in this process's thread pool: one model, as many images at once as there are cores."""

    def __init__(self, model):
        self.model = model
        self.slots = threading.BoundedSemaphore(os.cpu_count() or 1)

    def read_blocking(self, *request) -> tuple[dict, int]:
        with self.slots:
            return read_one(self.model, *request)

    async def start(self) -> None:
        pass

    async def read(self, *request) -> Response:
        answer, status = await run_in_threadpool(self.read_blocking, *request)
        return JSONResponse(answer, status_code=status)

    def close(self) -> None:
        pass


def framed(message) -> bytes:
    """A message as it goes over a reader's socket, either way: its length, then its pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return MESSAGE_LENGTH.pack(len(payload)) + payload


def send_message(connection: socket.socket, message) -> None:
    connection.sendall(framed(message))


def receive_message(stream):
    """The next message from a reader process's side of its socket; None once the server has closed it."""
    header = stream.read(MESSAGE_LENGTH.size)
    if len(header) < MESSAGE_LENGTH.size:
        return None
    length = MESSAGE_LENGTH.unpack(header)[0]
    payload = stream.read(length)
    return pickle.loads(payload) if len(payload) == length else None  # cut short: the server closed it mid-way


def reader_main(connection: socket.socket, model_source) -> None:
    """A reader process: load the model, say so, then answer each request (data, name, include_input) with
    (the JSON body, its status), or the DigitcnnError it raised, until the server closes the socket."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, and the server closes this socket
    torch.set_num_threads(1)
    model = load_model(model_source, onnx_twin=True)
    stream = connection.makefile("rb")
    try:
        send_message(connection, os.getpid())
        while (request := receive_message(stream)) is not None:
            try:
                answer, status = read_one(model, *request)
                reply = (JSONResponse(answer).body, status)
            except DigitcnnError as error:  # raised again in the server, whose handler answers it as its own
                reply = error
            except Exception:  # a bug of ours: the same answer as serve's handler of the unexpected, no traceback
                reply = (JSONResponse({"error": "internal error"}).body, 500)
            send_message(connection, reply)
    except ConnectionError:  # the server stopped or replaced this reader while it loaded or read
        return


class ReaderStopped(Exception):
    """A reader process ended (killed, out of memory) with a request unanswered or before it was ready."""


class ReaderProcess:
    """One reader process and the server's end of its socket."""

    def __init__(self, model_source, generation: int):
        self.generation = generation  # which start of the readers this one belongs to (ProcessReader.restart)
        self.connection, reader_end = socket.socketpair()
        # spawn, not fork: a forked copy of a process that already runs PyTorch's thread pools can deadlock.
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(target=reader_main, args=(reader_end, model_source), daemon=True)
        self.process.start()
        reader_end.close()  # the reader's copy alone keeps it open: its exit reads here as the end of the stream

    async def start(self) -> None:
        """Waits until the reader has loaded its model (a second or two for PyTorch)."""
        self.connection.setblocking(False)  # from here on only the event loop reads and writes it
        await self.receive()

    async def read(self, request: tuple) -> Response:
        try:
            await asyncio.get_running_loop().sock_sendall(self.connection, framed(request))
        except ConnectionError as error:
            raise ReaderStopped() from error
        reply = await self.receive()
        if isinstance(reply, DigitcnnError):
            raise reply
        body, status = reply
        return Response(body, status_code=status, media_type="application/json")

    async def receive(self):
        header = await self.receive_exactly(MESSAGE_LENGTH.size)
        return pickle.loads(await self.receive_exactly(MESSAGE_LENGTH.unpack(header)[0]))

    async def receive_exactly(self, size: int) -> bytes:
        loop, received = asyncio.get_running_loop(), bytearray()
        while len(received) < size:
            try:
                chunk = await loop.sock_recv(self.connection, size - len(received))
            except ConnectionError as error:
                raise ReaderStopped() from error
            if not chunk:  # the reader's end closed: it exited
                raise ReaderStopped()
            received += chunk
        return bytes(received)

    def stop(self) -> None:
        """Closes the socket, which ends the reader's loop; the process is killed if it does not end soon."""
        self.connection.close()
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


class ProcessReader:
    """Reads in `workers` processes that each hold the model. Python runs one thread at a time per process, and
    decoding, preprocessing and the model are most of a request's CPU, so one process cannot use every core.
    Each request waits for an idle reader, so the load stays even across them. The server talks to each over a
    socket on its own event loop: a pool's helper threads would each take the server's one Python thread in
    turn, for every request."""

    def __init__(self, model_source, workers: int):
        self.model_source, self.workers = model_source, workers
        self.generation = 0
        self.tasks: set[asyncio.Task] = set()  # the event loop keeps only weak references to its tasks

    async def start(self) -> None:
        """Starts every reader before the first request."""
        self.idle: asyncio.Queue[ReaderProcess] = asyncio.Queue()
        self.running = [ReaderProcess(self.model_source, self.generation) for _ in range(self.workers)]
        await asyncio.gather(*(reader.start() for reader in self.running))
        for reader in self.running:
            self.idle.put_nowait(reader)

    async def read(self, *request) -> Response:
        reader = await self.idle.get()
        # Shielded: a request cancelled halfway must not leave its answer in the socket for the next one to read.
        return await asyncio.shield(self.read_with(reader, request))

    async def read_with(self, reader: ReaderProcess, request: tuple) -> Response:
        try:
            return await reader.read(request)
        except ReaderStopped:  # a reader died (killed, out of memory): start afresh and say so
            if reader.generation == self.generation:  # the first of the requests it failed replaces them, once
                self.restart()
            return JSONResponse(READER_STOPPED, status_code=503)
        finally:
            self.give_back(reader)

    def give_back(self, reader: ReaderProcess) -> None:
        """An idle reader waits for the next request, unless the readers were replaced while it was busy."""
        if reader.generation == self.generation:
            self.idle.put_nowait(reader)
        else:
            self.in_background(asyncio.to_thread(reader.stop))

    def restart(self) -> None:
        """Replaces every reader, as a process pool would: the idle ones now, the busy ones when they answer.
        Requests wait for the new readers, which take a second or two to load the model."""
        self.generation += 1
        while not self.idle.empty():
            self.in_background(asyncio.to_thread(self.idle.get_nowait().stop))
        self.running = [ReaderProcess(self.model_source, self.generation) for _ in range(self.workers)]
        for reader in self.running:
            self.in_background(self.give_back_when_started(reader))

    async def give_back_when_started(self, reader: ReaderProcess) -> None:
        try:
            await reader.start()
        except ReaderStopped:  # it died loading the model: try afresh, as the first failure did
            if reader.generation == self.generation:
                self.restart()
            reader.stop()  # already ended: this closes its socket
            return
        self.give_back(reader)

    def in_background(self, work) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def close(self) -> None:
        for reader in self.running:  # every socket first, so that the readers end together
            reader.connection.close()
        for reader in self.running:
            reader.stop()
