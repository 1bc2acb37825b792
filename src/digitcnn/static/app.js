// The write-a-number page: strokes on a wide canvas, sent as PNG to /api/predict (the same path as uploads and
// the CLI), answered with the text read, a box and a confidence for each digit, and the 28x28 images the model saw.
"use strict";

const pad = document.getElementById("pad");
const context = pad.getContext("2d");
const marksView = document.getElementById("marks");
const labelView = document.getElementById("label");
const statusView = document.getElementById("status");
const digitsView = document.getElementById("digits");
const barsView = document.getElementById("bars");
const seenCanvas = document.getElementById("seen");
const seenView = seenCanvas.getContext("2d");

// A digit written here spans ~200 of the pad's 280 pixels of height; MNIST's strokes are ~2.8 px of its 20-px box,
// so ~28 px here. Thinner or thicker pens are normalized by the server's preprocessing anyway.
const BRUSH = 24;
const DEBOUNCE_MS = 150; // while drawing, ask again at most this often after the pen pauses
const PROMPT = "Write a digit or a number in the box";
let strokes = [];
let current = null;
let timer = null;
let pending = 0;
let backdrop = null; // an uploaded picture, shown under the strokes: {image, x, y, scale}

function fitHeight() {
  // The pad keeps 840 pixels of width and takes its height from the page's layout (3:1 wide, 2:1 on a phone).
  const box = pad.getBoundingClientRect();
  const height = Math.round((pad.width * box.height) / Math.max(box.width, 1));
  if (height > 0 && height !== pad.height) {
    pad.height = height;
    redraw();
  }
}

function redraw() {
  context.fillStyle = "#fff";
  context.fillRect(0, 0, pad.width, pad.height);
  if (backdrop) {
    const { image, x, y, scale } = backdrop;
    context.drawImage(image, x, y, image.width * scale, image.height * scale);
  }
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
  backdrop = null;
  redraw();
  showBlank(PROMPT);
});
document.getElementById("undo").addEventListener("click", () => {
  strokes.pop();
  redraw();
  if (strokes.length || backdrop) schedule();
  else showBlank(PROMPT);
});
document.getElementById("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  strokes = [];
  backdrop = null;
  try {
    const image = await createImageBitmap(file);
    const scale = Math.min(pad.width / image.width, pad.height / image.height);
    backdrop = { image, scale, x: (pad.width - image.width * scale) / 2, y: (pad.height - image.height * scale) / 2 };
  } catch (error) {
    // Not a picture the browser can show: the server still reads it (or says why it cannot).
  }
  redraw();
  // The upload itself is read, at its own resolution; its boxes are drawn where the picture lies on the pad.
  send(file, file.name, backdrop ? { ...backdrop } : null);
});

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(() => pad.toBlob((blob) => send(blob, "canvas.png", { x: 0, y: 0, scale: 1 }), "image/png"), DEBOUNCE_MS);
}

async function send(blob, name, placement) {
  const ticket = ++pending; // answers can arrive out of order; only the latest request is shown
  document.dispatchEvent(new CustomEvent("digit:image", { detail: blob })); // the "look inside" view (inside.js) follows
  const form = new FormData();
  form.append("file", blob, name);
  statusView.textContent = "Reading…";
  try {
    const response = await fetch("/api/predict?include_input=true", { method: "POST", body: form });
    const answer = await response.json();
    if (ticket !== pending) return;
    if (!response.ok) return showBlank(answer.error || `error ${response.status}`);
    show(answer, placement);
    // teach.js offers "wrong? tap the right digit" for this image (the canvas at full size, or the upload).
    document.dispatchEvent(new CustomEvent("digitcnn:answer", { detail: { answer, image: blob } }));
  } catch (error) {
    if (ticket === pending) showBlank("The server did not answer");
  }
}

function isNotDigit(digit) {
  return digit.label === null || digit.error === "not a digit";
}

function show(answer, placement) {
  const digits = answer.digits || [];
  if (answer.error || digits.length === 0) {
    const messages = { "no digit found": "No digit found", "not a digit": "That doesn't look like a digit" };
    showBlank(messages[answer.error] || answer.error || "No digit found");
    return;
  }
  labelView.textContent = answer.text;
  labelView.classList.toggle("unsure", answer.unsure);
  const percent = Math.round(answer.confidence * 100);
  if (digits.length === 1) {
    statusView.textContent = answer.unsure ? `Not sure: maybe ${answer.text} (${percent}%)` : `${percent}% sure`;
  } else {
    const doubtful = digits.filter((digit) => digit.unsure).length;
    statusView.textContent = doubtful
      ? `${digits.length} digits; not sure of ${doubtful} (least sure ${percent}%)`
      : `${digits.length} digits; the least sure at ${percent}%`;
  }
  document.body.dataset.state = answer.unsure ? "unsure" : "sure";
  drawDigits(digits);
  drawMarks(digits, placement);
  drawBars(digits.length === 1 ? answer.probabilities : null, digits.length === 1 ? answer.label : null);
  drawSeen(answer.input);
}

function showBlank(message) {
  document.dispatchEvent(new CustomEvent("digitcnn:answer", { detail: null })); // nothing to teach
  labelView.textContent = "?";
  labelView.classList.add("unsure");
  statusView.textContent = message;
  document.body.dataset.state = "blank";
  drawDigits([]);
  drawMarks([], null);
  drawBars(null, null);
  drawSeen(null);
}

function digitClass(digit) {
  return isNotDigit(digit) ? "not-digit" : digit.unsure ? "unsure" : "";
}

function digitText(digit) {
  const name = isNotDigit(digit) ? "not a digit" : `${digit.label}`;
  return `${name} ${Math.round((digit.confidence || 0) * 100)}%`;
}

function drawDigits(digits) {
  digitsView.replaceChildren();
  if (digits.length < 2) return; // a lone digit is the label above, its probabilities the bars below
  for (const digit of digits) {
    const item = document.createElement("li");
    item.className = digitClass(digit);
    const label = document.createElement("b");
    label.textContent = isNotDigit(digit) ? "✗" : `${digit.label}`;
    item.append(label, `${Math.round((digit.confidence || 0) * 100)}%${digit.unsure ? " ?" : ""}`);
    digitsView.appendChild(item);
  }
}

function drawMarks(digits, placement) {
  // Each digit's box, from the image's pixels to the pad's, then to percentages of the pad on screen.
  marksView.replaceChildren();
  if (!placement) return;
  for (const digit of digits) {
    if (!digit.box) continue;
    const [x0, y0, x1, y1] = digit.box.map((value) => value * placement.scale);
    const box = document.createElement("div");
    box.className = `box ${digitClass(digit)}`.trim();
    box.style.left = `${((placement.x + x0) / pad.width) * 100}%`;
    box.style.top = `${((placement.y + y0) / pad.height) * 100}%`;
    box.style.width = `${((x1 - x0) / pad.width) * 100}%`;
    box.style.height = `${((y1 - y0) / pad.height) * 100}%`;
    const caption = document.createElement("span");
    caption.textContent = digitText(digit);
    box.appendChild(caption);
    marksView.appendChild(box);
  }
}

function drawBars(probabilities, top) {
  barsView.replaceChildren();
  barsView.hidden = digitsView.childElementCount > 0; // a number's digits have their own list
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
  // One 28x28 image per digit read, side by side.
  const width = input ? input[0].length : 28;
  seenCanvas.width = width;
  const image = seenView.createImageData(width, 28);
  for (let i = 0; i < width * 28; i++) {
    const value = input ? Math.round(input[Math.floor(i / width)][i % width] * 255) : 0;
    image.data.set([value, value, value, 255], i * 4);
  }
  seenView.putImageData(image, 0, 0);
}

window.addEventListener("resize", fitHeight);
fitHeight();
redraw();
showBlank(PROMPT);
