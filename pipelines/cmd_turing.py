"""``igan turing MODEL_URI --data ROOT [--split NAME] [--n N] [--port P]``: the paper's human visual
Turing test (Section 6) as a local web page; ``igan turing MODEL_URI --summary`` reports the
annotators' accuracy and logs it to the model version's source MLflow run. Answers and the fixed
image sets live in ``$IGAN_HOME/turing.db``. Import stays light: torch, Flask and MLflow load when it runs."""
from __future__ import annotations

import argparse
import json
import sys

from pipelines.cli_options import add_model_loading, add_model_uri

DEFAULT_N = 50
DEFAULT_PORT = 8765
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``igan turing``."""
    add_model_uri(parser)
    parser.add_argument("--data", metavar="ROOT",
                        help="shard root of the real images (default: the run's data.path; digits: the "
                             "cache `igan train` uses)")
    parser.add_argument("--split", metavar="NAME", help="split of the real images (default: the config's data.test_split)")
    parser.add_argument("--n", type=int, metavar="N",
                        help=f"real images and as many generated ones (default {DEFAULT_N}, so {2 * DEFAULT_N} shown)")
    parser.add_argument("--seed", type=int, metavar="S", help="seed of the draw, the noise and the order (default 0)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P",
                        help=f"port to serve on (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", metavar="H",
                        help="address to serve on (default 127.0.0.1; any other needs --allow-remote)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow --host to be an address other machines can reach")
    parser.add_argument("--feedback", action="store_true", help="tell annotators after each answer whether it was right")
    parser.add_argument("--summary", action="store_true",
                        help="print the annotators' accuracy and log it to the model's MLflow run instead of serving")
    add_model_loading(parser, noise_seed=False, trust_pickled=False)


def run(args: argparse.Namespace) -> int:
    """Serve the test until interrupted, or with ``--summary`` report it; 0 on success."""
    import os

    from pipelines.errors import UserError

    if args.n is not None and not 1 <= args.n <= 10000:
        raise UserError(f"--n must be between 1 and 10000, got {args.n}")
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    remote_warning = check_host(args.host, args.allow_remote)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from pipelines.defaults import resolve_tracking_uri, turing_db
    from pipelines.registry import check_tracking_uri, resolve_model_uri
    from pipelines.turing.store import TuringStore

    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    check_tracking_uri(tracking_uri)
    name, version, run_id = resolve_model_uri(args.model_uri, tracking_uri)
    store = TuringStore(turing_db())
    if args.summary:
        return summary(args, store, tracking_uri, name, version, run_id)
    return serve(args, store, tracking_uri, name, version, run_id, remote_warning)


def check_host(host: str, allow_remote: bool) -> str | None:
    """None for a loopback ``host``; for any other the warning to print when ``allow_remote``,
    else UserError (serving beyond this machine must be asked for explicitly)."""
    from pipelines.errors import UserError

    if host in LOCAL_HOSTS:
        return None
    if not allow_remote:
        raise UserError(f"--host {host} lets other machines reach the test; add --allow-remote to mean it")
    return (f"igan turing: warning: serving on {host}: anyone who can reach this machine can see the "
            "images and submit answers under any name")


def _data_id(root: str) -> str:
    """A shard root as stored: local paths absolute, URLs (``s3://``) as given."""
    from pathlib import Path

    return root if "://" in root else str(Path(root).expanduser().resolve())


def prepare_set(args, store, tracking_uri: str, name, version, run_id) -> int:
    """The id of the image set for (model, data, split, n, seed): the stored one when it exists,
    else one built now from the data and the generator and stored. UserError for unusable input."""
    from pipelines.cmd_sample import pick_device
    from pipelines.errors import UserError
    from pipelines.registry import load_generator
    from pipelines.job_inputs import ensure_data
    from pipelines.turing import images
    from pipelines.turing.store import set_key

    generator, cfg = load_generator(args.model_uri, tracking_uri, device=pick_device(args.device))
    if cfg.model.name == "toy_mlp":
        raise UserError(f"{args.model_uri} is a toy preset ({cfg.preset}): it makes 2-D points, not images")
    # the same shard root `igan train` would use (digits: its cache, sharded on first use), checked
    # against the model's config, so real and generated images are of one data set and size
    root = ensure_data(cfg, args.data, log=lambda m: print(m.replace("igan train", "igan turing"), file=sys.stderr))
    data, split = _data_id(root), args.split or cfg.data.test_split
    n, seed = args.n or DEFAULT_N, args.seed or 0
    key = set_key(run_id, name, version, data, split, n, seed)
    found = store.find_set(key)
    if found is not None:
        return found  # the same images as before: a restart changes nothing
    try:
        real, keys = images.real_images(data, split, n, seed)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read {n} images of split '{split}' under '{root}': "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        items = images.interleave(real, keys, images.generated_images(generator, cfg, n, seed), seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    meta = {"model_uri": args.model_uri, "model_name": name, "model_version": version, "run_id": run_id,
            "data": data, "split": split, "n": n, "seed": seed,
            "width": int(real.shape[-1]), "height": int(real.shape[-2])}
    return store.create_set(key, meta, items)


def serve(args, store, tracking_uri: str, name, version, run_id, remote_warning: str | None = None) -> int:
    """Build or find the image set and serve it until interrupted; 0."""
    import socket

    from werkzeug.serving import make_server

    from pipelines.errors import UserError
    from pipelines.turing.app import create_app

    set_id = prepare_set(args, store, tracking_uri, name, version, run_id)
    info = store.set_info(set_id)
    app = create_app(store, set_id, feedback=args.feedback)
    if remote_warning:
        print(remote_warning, file=sys.stderr)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:  # bound here, not by werkzeug: its bind error exits the process with its own message
        listener = socket.create_server((args.host, args.port), family=family, backlog=64)
    except OSError as exc:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from None
    with listener:
        server = make_server(args.host, listener.getsockname()[1], app, threaded=True, fd=listener.fileno())
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{server.port}/"
    try:
        print(f"Turing test of {args.model_uri}: {info['total']} images ({info['n']} real from "
              f"'{info['split']}', {info['n']} generated), answers in {store.path}")
        print(f"open {url} (Ctrl-C to stop)")
        if args.json:
            print(json.dumps({"url": url, "set_id": set_id, "images": info["total"], "db": str(store.path),
                              "model_uri": args.model_uri, "name": name, "version": version, "run_id": run_id,
                              "data": info["data"], "split": info["split"], "n": info["n"], "seed": info["seed"]}))
        sys.stdout.flush()
        server.serve_forever()  # werkzeug returns from here on Ctrl-C
    except KeyboardInterrupt:  # Ctrl-C before serving began
        pass
    finally:
        server.server_close()
    # Ctrl-C is how a test session normally ends: not an error, and every answer is already saved
    print(f"igan turing: stopped; the answers are in {store.path}", file=sys.stderr)
    return 0


def summary(args, store, tracking_uri: str, name, version, run_id) -> int:
    """Print the accuracies of the model's tests, log them and the CSV to its run; 0."""
    from pipelines.errors import UserError
    from pipelines.tracking import make_client
    from pipelines.turing import summary as report

    set_ids = store.sets_for_model(run_id, name, version, data=_data_id(args.data) if args.data else None,
                                   split=args.split, n=args.n, seed=args.seed)
    rows = store.answers(set_ids)
    if not rows:
        what = "no Turing test" if not set_ids else "no answers yet in the Turing test"
        raise UserError(f"{what} of {args.model_uri} in {store.path} (serve one with "
                        f"`igan turing {args.model_uri} --data ROOT`)")
    result = report.summarize(rows)
    metrics = report.log_to_run(make_client(tracking_uri), run_id, result, rows)
    label = f"{name} v{version}" if name else f"run {run_id}"
    print(f"Turing test of {label}: {len(rows)} answers by {len(result['annotators'])} annotator(s); "
          "accuracy = share labelled correctly (0.5: cannot tell)")
    for line in report.format_table(result):
        print(line)
    print(f"logged human_turing_accuracy={metrics.get('human_turing_accuracy', float('nan')):.4f} and "
          f"{report.CSV_ARTIFACT} to run {run_id}")
    if args.json:
        print(json.dumps({"model_uri": args.model_uri, "name": name, "version": version, "run_id": run_id,
                          "sets": set_ids, **result, "metrics": metrics, "csv_artifact": report.CSV_ARTIFACT}))
    return 0
