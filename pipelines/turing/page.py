"""The single HTML page of ``igan turing`` (inline CSS and script, no external files, so it works
offline and needs no package data)."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>igan: real or generated?</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 36rem; text-align: center; color: #222; }
  h1 { font-size: 1.4rem; }
  #stage img { image-rendering: pixelated; image-rendering: crisp-edges; border: 1px solid #999; background: #fff; }
  button { font-size: 1.1rem; padding: .5rem 1.4rem; margin: .6rem; cursor: pointer; }
  kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 .3rem; font-size: .9rem; }
  #progress { margin: .8rem; color: #555; }
  #feedback { height: 1.4rem; font-weight: bold; }
  .hidden { display: none; }
  #error { color: #b00; }
</style>
</head>
<body>
<h1>Real or generated?</h1>
<form id="login">
  <p>Each image is either a real one from the data set or made by a generator. Enter your name to
  start (or to continue where you stopped).</p>
  <input id="name" name="name" maxlength="64" placeholder="your name" autofocus required>
  <button id="start" type="submit">Start</button>
</form>
<div id="test" class="hidden">
  <p>Annotator: <b id="who"></b></p>
  <div id="stage"><img id="image" alt="image to judge"></div>
  <div>
    <button id="real" type="button">Real <kbd>r</kbd></button>
    <button id="generated" type="button">Generated <kbd>g</kbd></button>
  </div>
  <div id="feedback"></div>
  <div id="progress"></div>
</div>
<div id="done" class="hidden"><p>All done, thank you!</p><div id="done-progress"></div></div>
<p id="error"></p>
<script>
"use strict";
let test = null, annotator = null, current = null, busy = false;
const $ = (id) => document.getElementById(id);

async function api(path, options) {
  let response;
  try { response = await fetch(path, options); }
  catch (err) { throw new Error("the server does not answer; your answers so far are saved, try again"); }
  const body = await response.json();
  if (!response.ok) {
    const err = new Error(body.error || response.statusText);
    err.status = response.status;
    throw err;
  }
  return body;
}

function show(progress) {
  $("error").textContent = "";
  const text = progress.answered + " of " + progress.total + " answered";
  $("progress").textContent = text;
  $("progress").dataset.answered = progress.answered;
  if (progress.next === null) {
    current = null;
    $("test").classList.add("hidden");
    $("done").classList.remove("hidden");
    $("done-progress").textContent = text;
    return;
  }
  current = progress.next;
  const img = $("image");
  img.src = "/images/" + current + ".png";
  img.width = test.width * test.scale;
  img.height = test.height * test.scale;
  img.dataset.imageId = current;
}

async function start(event) {
  event.preventDefault();
  annotator = $("name").value.trim();
  if (!annotator) return;
  try {
    test = test || await api("/api/test");
    const progress = await api("/api/next?annotator=" + encodeURIComponent(annotator));
    localStorage.setItem("igan-turing-annotator", annotator);
    $("who").textContent = annotator;
    $("login").classList.add("hidden");
    $("test").classList.remove("hidden");
    show(progress);
  } catch (err) { $("error").textContent = err.message; }
}

async function answer(choice) {
  if (busy || current === null) return;
  busy = true;
  try {
    const progress = await api("/api/answers", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({annotator: annotator, image_id: current, answer: choice})});
    if ("correct" in progress) {
      $("feedback").textContent = progress.correct ? "right" : "wrong (it was " +
        (choice === "real" ? "generated" : "real") + ")";
    }
    show(progress);
  } catch (err) {
    // Answered already (another tab of the same annotator): move on to their next image, then say
    // why (the message last, so a page showing it is already on the next image).
    if (err.status === 409) {
      try { show(await api("/api/next?annotator=" + encodeURIComponent(annotator))); } catch (e) { /* keep the message */ }
    }
    $("error").textContent = err.message;
  }
  busy = false;
}

$("login").addEventListener("submit", start);
$("real").addEventListener("click", () => answer("real"));
$("generated").addEventListener("click", () => answer("generated"));
document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "r") answer("real");
  if (event.key === "g") answer("generated");
});
$("name").value = localStorage.getItem("igan-turing-annotator") || "";
</script>
</body>
</html>
"""
