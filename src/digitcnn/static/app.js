// The draw-a-digit page: strokes on a canvas, sent as PNG to /api/predict (the same path as uploads and the
// CLI), answered with a label, ten probabilities and the 28x28 image the model saw.
"use strict";

const pad = document.getElementById("pad");
const context = pad.getContext("2d");
const labelView = document.getElementById("label");
const statusView = document.getElementById("status");
const barsView = document.getElementById("bars");
const seenView = document.getElementById("seen").getContext("2d");

// A digit drawn here spans ~200 of the 280 canvas pixels; MNIST's strokes are ~2.8 px of its 20-px box,
// so ~28 px here. Thinner or thicker pens are normalized by the server's preprocessing anyway.
const BRUSH = 26;
const DEBOUNCE_MS = 150; // while drawing, ask again at most this often after the pen pauses
let strokes = [];
let current = null;
let timer = null;
let pending = 0;

function redraw() {
  context.fillStyle = "#fff";
  context.fillRect(0, 0, pad.width, pad.height);
  context.strokeStyle = "#000";
  context.lineWidth = BRUSH;
  context.lineCap = "round";
  context.lineJoin = "round";
  for (const stroke of strokes) {
    context.beginPath();
    context.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke) context.lineTo(x, y);
    if (stroke.length === 1) context.lineTo(stroke[0][0] + 0.1, stroke[0][1]);
    context.stroke();
  }
}

function position(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  current = [position(event)];
  strokes.push(current);
  redraw();
});
pad.addEventListener("pointermove", (event) => {
  if (!current) return;
  current.push(position(event));
  redraw();
  schedule();
});
for (const name of ["pointerup", "pointercancel"]) {
  pad.addEventListener(name, () => {
    if (!current) return;
    current = null;
    schedule();
  });
}

document.getElementById("clear").addEventListener("click", () => {
  strokes = [];
  redraw();
  showBlank("Draw a digit in the box");
});
document.getElementById("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  if (strokes.length) schedule();
  else showBlank("Draw a digit in the box");
});
document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) send(file, file.name);
  event.target.value = "";
});

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(() => pad.toBlob((blob) => send(blob, "canvas.png"), "image/png"), DEBOUNCE_MS);
}

async function send(blob, name) {
  const ticket = ++pending; // answers can arrive out of order; only the latest request is shown
  const form = new FormData();
  form.append("file", blob, name);
  statusView.textContent = "Reading…";
  try {
    const response = await fetch("/api/predict?include_input=true", { method: "POST", body: form });
    const answer = await response.json();
    if (ticket !== pending) return;
    if (!response.ok) return showBlank(answer.error || `error ${response.status}`);
    show(answer);
    // teach.js offers "wrong? tap the right digit" for this image (the canvas at full size, or the upload).
    document.dispatchEvent(new CustomEvent("digitcnn:answer", { detail: { answer, image: blob } }));
  } catch (error) {
    if (ticket === pending) showBlank("The server did not answer");
  }
}

function show(answer) {
  if (answer.label === null) {
    showBlank(answer.error === "no digit found" ? "No digit found" : answer.error);
    return;
  }
  labelView.textContent = answer.class_name;
  labelView.classList.toggle("unsure", answer.unsure);
  const percent = Math.round(answer.confidence * 100);
  statusView.textContent = answer.unsure ? `Not sure: maybe ${answer.class_name} (${percent}%)` : `${percent}% sure`;
  document.body.dataset.state = answer.unsure ? "unsure" : "sure";
  drawBars(answer.probabilities, answer.label);
  drawSeen(answer.input);
}

function showBlank(message) {
  document.dispatchEvent(new CustomEvent("digitcnn:answer", { detail: null })); // nothing to teach
  labelView.textContent = "?";
  labelView.classList.add("unsure");
  statusView.textContent = message;
  document.body.dataset.state = "blank";
  drawBars(null, null);
  drawSeen(null);
}

function drawBars(probabilities, top) {
  barsView.replaceChildren();
  for (let digit = 0; digit < 10; digit++) {
    const value = probabilities ? probabilities[digit] : 0;
    const item = document.createElement("li");
    if (digit === top) item.className = "top";
    item.innerHTML = `<span>${digit}</span><span class="bar"><span class="fill"></span></span><span>${(value * 100).toFixed(1)}%</span>`;
    item.querySelector(".fill").style.width = `${value * 100}%`;
    barsView.appendChild(item);
  }
}

function drawSeen(input) {
  const image = seenView.createImageData(28, 28);
  for (let i = 0; i < 28 * 28; i++) {
    const value = input ? Math.round(input[Math.floor(i / 28)][i % 28] * 255) : 0;
    image.data.set([value, value, value, 255], i * 4);
  }
  seenView.putImageData(image, 0, 0);
}

redraw();
showBlank("Draw a digit in the box");
