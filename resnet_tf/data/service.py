"""The tf.data service: preprocessing on other processes or machines than the training job.

When one host's CPUs cannot decode and augment fast enough for its accelerators,
TensorFlow's answer is the tf.data service: a dispatcher and any number of workers run
the input pipeline, and the training job reads finished batches from them.

    python -m resnet_tf data-service --port 5050 --workers 2     # dispatcher + 2 workers
    python -m resnet_tf data-service --dispatcher host-a:5050 --workers 8   # more, elsewhere
    python train.py --data-dir DIR --data-service host-a:5050 ...

The training pipeline is sent as it is (reading, decoding, augmentation, batching) in the
"distributed_epoch" mode: the dispatcher hands out the source's elements (file names,
records or in-memory indices) so that each image is seen once per epoch, as in local
training. "parallel_epochs" would have every worker produce a whole epoch, so N workers
would repeat every image N times per epoch, and the run's epochs, schedule and history
would no longer mean what they mean without the service. The price: each worker drops its
own incomplete last batch, so an epoch may be up to (workers - 1) batches shorter.
"""

import socket
import time

import tensorflow as tf

from resnet_tf.errors import DataError

PROCESSING_MODE = "distributed_epoch"
_CONNECT_TIMEOUT_S = 3.0


def service_target(address):
    """`grpc://host:port` for "host:port" (or "grpc://host:port"), checked to answer.

    A tf.data service client waits for an unreachable dispatcher indefinitely; this fails
    within seconds instead, with one `DataError` line.
    """
    text = str(address)
    host_port = text.split("://", 1)[1] if "://" in text else text
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DataError(f"--data-service must be HOST:PORT. Received: --data-service {text!r}; "
                        "expected e.g. localhost:5050.")
    try:
        with socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise DataError(f"No tf.data service dispatcher answers at {host}:{port} "
                        f"({error.strerror or type(error).__name__}); start one with `python -m "
                        f"resnet_tf data-service --port {port} --workers N` there, or drop "
                        "--data-service.") from None
    return f"grpc://{host}:{port}"


def distribute(dataset, address, job_name=None):
    """`dataset` processed by the tf.data service at `address` ("host:port")."""
    return dataset.apply(tf.data.experimental.service.distribute(
        PROCESSING_MODE, service_target(address), job_name=job_name))


def start_servers(port=0, workers=1, *, dispatcher=None, host="localhost", work_dir=None):
    """Starts a dispatcher on `port` (unless `dispatcher` names a running one) and `workers`
    workers registered with it, in this process; returns `(dispatcher target, servers)`.

    `host` is the name the training job reaches this machine's workers by (the workers
    tell the dispatcher `host:<their port>`): "localhost" for one machine, this machine's
    name or address for a training job elsewhere.
    """
    service = tf.data.experimental.service
    servers = []
    if dispatcher is None:
        config = service.DispatcherConfig(port=port, work_dir=work_dir,
                                          fault_tolerant_mode=work_dir is not None)
        servers.append(service.DispatchServer(config))
        target = servers[0].target
    else:
        target = service_target(dispatcher)
    address = target.split("://", 1)[1]
    for _ in range(workers):
        servers.append(service.WorkerServer(service.WorkerConfig(
            dispatcher_address=address, worker_address=f"{host}:%port%")))
    return target, servers


def serve_forever(port, workers, **kwargs):
    """`start_servers`, then waits until interrupted (Ctrl-C or SIGTERM ends the process)."""
    target, servers = start_servers(port, workers, **kwargs)
    print(f"tf.data service: dispatcher {target}, {workers} worker(s) here; pass "
          f"--data-service {target.split('://', 1)[1]} to train.py. Ctrl-C stops.", flush=True)
    while True:
        time.sleep(3600)
