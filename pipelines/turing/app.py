"""The Flask app of ``igan turing``: the page and a small JSON API over :class:`TuringStore`.

Routes: ``GET /`` (the page), ``GET /api/test`` (size, count, feedback), ``GET /api/next?annotator=NAME``
(progress and the next image id), ``GET /images/<id>.png``, ``POST /api/answers`` with JSON
``{"annotator", "image_id", "answer": "real" | "generated"}``. Bad requests get a 4xx with
``{"error": message}`` and change nothing.
"""
from __future__ import annotations

from flask import Flask, Response, jsonify, request

from pipelines.turing.page import PAGE
from pipelines.turing.store import StoreError, TuringStore

#: Images are shown at an integer multiple of their size, about this many CSS pixels wide.
DISPLAY_WIDTH = 256


def display_scale(width: int) -> int:
    """The integer up-scaling for an image ``width`` pixels wide (at least 1)."""
    return max(1, DISPLAY_WIDTH // max(1, width))


def create_app(store: TuringStore, set_id: int, feedback: bool = False) -> Flask:
    """A Flask app serving image set ``set_id`` of ``store``; with ``feedback`` an answer's reply
    (and so the page) says whether it was right."""
    info = store.set_info(set_id)
    app = Flask(__name__)
    app.json.sort_keys = False

    @app.errorhandler(StoreError)
    def _store_error(exc: StoreError):
        return jsonify(error=str(exc)), exc.status

    @app.get("/")
    def page():
        return Response(PAGE, mimetype="text/html")

    @app.get("/healthz")
    def healthz():
        return jsonify(ok=True)

    @app.get("/api/test")
    def test_info():
        return jsonify(total=info["total"], width=info["width"], height=info["height"],
                       scale=display_scale(info["width"]), feedback=feedback)

    @app.get("/api/next")
    def next_image():
        return jsonify(store.progress(set_id, request.args.get("annotator")))

    @app.get("/images/<int:image_id>.png")
    def image(image_id: int):
        response = Response(store.image_png(set_id, image_id), mimetype="image/png")
        response.cache_control.max_age = 3600  # an image id always names the same image
        return response

    @app.post("/api/answers")
    def answer():
        # Only application/json bodies are read: a plain cross-site form cannot send one without a
        # CORS preflight, which this app never grants, so other web pages cannot submit answers.
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise StoreError("the body must be a JSON object with annotator, image_id and answer")
        unknown = set(body) - {"annotator", "image_id", "answer"}
        if unknown:
            raise StoreError(f"unknown fields: {', '.join(sorted(unknown))}")
        correct = store.record_answer(set_id, body.get("annotator"), body.get("image_id"), body.get("answer"))
        reply = store.progress(set_id, body["annotator"])
        if feedback:
            reply["correct"] = correct
        return jsonify(reply), 201

    return app
