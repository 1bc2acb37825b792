"""Load on the JSON API: `digitcnn serve` in its own process on loopback, concurrent clients posting real digit
images (MNIST test digits as 140x140 dark-on-light PNGs) for a fixed number of requests. Reports requests/s,
latency percentiles, errors, and the server's memory at the start, middle and end.

    .venv/bin/python -m benchmarks.load                 # 10,000 requests, 8 clients, a reader per core
    .venv/bin/python -m benchmarks.load --workers 1     # the server's default: images read in threads
    .venv/bin/python -m benchmarks.load --tiny          # the CI smoke run
"""

import argparse
import http.client
import io
import os
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image

from benchmarks.common import machine, write_result
from digitcnn import load_data


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_family(pid: int) -> list[int]:
    """The server and its worker processes."""
    family = {pid}
    for entry in sorted(os.listdir("/proc"), key=lambda name: (len(name), name)):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if parent in family:
                family.add(int(entry))
        except OSError:  # a process that ended while we looked
            continue
    return sorted(family)


def resident_megabytes(pid: int) -> float:
    """The resident memory of the server and its worker processes together."""
    total_kilobytes = 0
    for member in server_family(pid):
        with open(f"/proc/{member}/status") as status:
            total_kilobytes += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return round(total_kilobytes / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the server and its workers so far."""
    ticks = 0
    for member in server_family(pid):
        with open(f"/proc/{member}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def digit_pngs(count: int) -> tuple[list[bytes], list[int]]:
    _, (x_test, y_test) = load_data()
    bodies = []
    for image in x_test[:count]:
        buffer = io.BytesIO()
        Image.fromarray(255 - image).resize((140, 140), Image.Resampling.BICUBIC).save(buffer, "PNG")
        bodies.append(buffer.getvalue())
    return bodies, [int(label) for label in y_test[:count]]


def start_server(port: int, workers: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "digitcnn", "serve", "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("digitcnn serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="reader processes (`digitcnn serve --workers`); default: one per core",
    )
    parser.add_argument("--tiny", action="store_true", help="200 requests: checks the script runs")
    parser.add_argument("--out", default="benchmarks/results/load.json")
    arguments = parser.parse_args()
    if arguments.tiny:
        arguments.requests = 200
    bodies, labels = digit_pngs(500)
    port = free_port()
    server = start_server(port, arguments.workers)
    memory = {"start": resident_megabytes(server.pid)}
    latencies: list[float] = []
    errors: list[str] = []
    wrong = 0
    next_request = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal next_request, wrong
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                index = next_request
                next_request += 1
                if index == arguments.requests // 2:
                    memory["middle"] = resident_megabytes(server.pid)
            if index >= arguments.requests:
                return
            body = bodies[index % len(bodies)]
            started = time.perf_counter()
            try:
                connection.request("POST", "/api/predict", body=body, headers={"content-type": "image/png"})
                response = connection.getresponse()
                payload = response.read()
            except OSError as error:
                errors.append(type(error).__name__)
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if response.status != 200:
                    errors.append(str(response.status))
                elif f'"label":{labels[index % len(labels)]},'.encode() not in payload:
                    wrong += 1

    # A short warm-up, not measured: the first requests pay for lazy imports and oneDNN's kernel choice.
    warm = http.client.HTTPConnection("127.0.0.1", port)
    for body in bodies[:20]:
        warm.request("POST", "/api/predict", body=body)
        warm.getresponse().read()
    started = time.perf_counter()
    server_cpu_before, client_cpu_before = cpu_seconds(server.pid), time.process_time()
    threads = [threading.Thread(target=client) for _ in range(arguments.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    server_cpu, client_cpu = cpu_seconds(server.pid) - server_cpu_before, time.process_time() - client_cpu_before
    memory["end"] = resident_megabytes(server.pid)
    server.terminate()
    server.wait(timeout=10)

    milliseconds = np.array(latencies) * 1000
    result = {
        "benchmark": "JSON API under load (loopback)",
        "requests": arguments.requests,
        "concurrency": arguments.concurrency,
        "server_workers": arguments.workers,
        "seconds": round(seconds, 2),
        "requests_per_second": round(len(latencies) / seconds, 1),
        "latency_ms": {
            "p50": round(float(np.percentile(milliseconds, 50)), 2),
            "p99": round(float(np.percentile(milliseconds, 99)), 2),
            "mean": round(statistics.fmean(milliseconds), 2),
        },
        # Where the two cores went: the server's work per request, and this script's own (the clients).
        "cpu_ms_per_request": {
            "server": round(1000 * server_cpu / len(latencies), 2),
            "clients": round(1000 * client_cpu / len(latencies), 2),
        },
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "wrong_labels": wrong,
        "server_rss_mb": memory,
        "image": "MNIST test digits, 140x140 dark-on-light PNG (~2-4 kB)",
        **machine(),
    }
    print(
        f"{result['requests_per_second']:.1f} requests/s, p50 {result['latency_ms']['p50']} ms, "
        f"p99 {result['latency_ms']['p99']} ms, {len(errors)} errors, {wrong} wrong labels, "
        f"server RSS {memory['start']} -> {memory.get('middle')} -> {memory['end']} MB; CPU ms per request: "
        f"server {result['cpu_ms_per_request']['server']}, "
        f"clients {result['cpu_ms_per_request']['clients']}"
    )
    write_result(arguments.out, result, tiny=arguments.tiny)


if __name__ == "__main__":
    main()
