"""``igan turing``: the paper's human visual Turing test (Section 6) as a local web page.

``store`` keeps image sets and answers in SQLite, ``images`` builds a set, ``app`` serves it with
Flask, ``page`` is the HTML, ``summary`` computes accuracies and logs them to MLflow."""
