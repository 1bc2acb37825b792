// The "look inside" view: for each image app.js sends (event "digit:image"), /api/inside answers with what every
// convolution block and pooling step of the network makes of it; drawn here as rows of greyscale tiles, with the
// input, the saliency and the class scores. Requests go out only while the view is open.
"use strict";

(() => {
  const view = document.getElementById("inside");
  const chooser = document.getElementById("inside-model");
  const statusView = document.getElementById("inside-status");
  const inputView = document.getElementById("inside-input").getContext("2d");
  const saliencyView = document.getElementById("inside-saliency").getContext("2d");
  const scoresView = document.getElementById("inside-scores");
  const rowsView = document.getElementById("inside-layers");
  const TILE_PIXELS = 1.5; // CSS pixels per activation pixel, so a 28x28 map is a 42-px tile...
  const SMALLEST_TILE = 24; // ...and a 3x3 one still big enough to see and tap
  let latest = null; // the last image sent, looked into again when the view opens or the network changes
  let ticket = 0; // answers can arrive out of order; only the latest is shown

  document.addEventListener("digit:image", (event) => {
    latest = event.detail;
    if (view.open) look();
  });
  view.addEventListener("toggle", () => view.open && latest && look());
  chooser.addEventListener("change", () => latest && look());
  // app.js marks the page blank when it is cleared, undone to nothing, or holds no digit.
  new MutationObserver(() => {
    if (document.body.dataset.state !== "blank") return;
    latest = null;
    ticket++;
    clear("Draw a digit to see each layer");
  }).observe(document.body, { attributes: true, attributeFilter: ["data-state"] });

  async function listModels() {
    const answer = await (await fetch("/api/inside")).json();
    for (const [name, model] of Object.entries(answer.models)) {
      const option = new Option(describe(name, model), name);
      option.disabled = !model.layers;
      if (!model.layers) option.title = model.error;
      chooser.add(option);
    }
    const usable = [...chooser.options].find((option) => !option.disabled);
    if (usable) chooser.value = usable.value;
  }

  function describe(name, model) {
    const accuracy = model.test_accuracy ? `, ${(model.test_accuracy * 100).toFixed(2)}% on MNIST's test set` : "";
    const what = name === "seed" ? "the tutorial's network" : `the served model (${model.arch})`;
    return `${what}${accuracy}${model.layers ? "" : ": no layers to show"}`;
  }

  async function look() {
    const mine = ++ticket;
    const form = new FormData();
    form.append("file", latest, "canvas.png");
    statusView.textContent = "Looking…";
    try {
      const response = await fetch(`/api/inside?model=${encodeURIComponent(chooser.value)}`, { method: "POST", body: form });
      const answer = await response.json();
      if (mine !== ticket) return;
      if (!response.ok) return clear(answer.error || `error ${response.status}`);
      const messages = { "no digit found": "No digit found", "not a digit": "That doesn't look like a digit" };
      if (!answer.shown) return clear(messages[answer.error] || answer.error || "No digit found");
      show(answer);
    } catch (error) {
      if (mine === ticket) clear("The server did not answer");
    }
  }

  function clear(message) {
    statusView.textContent = message;
    rowsView.replaceChildren();
    delete rowsView.dataset.signature;
    scoresView.replaceChildren();
    for (const context of [inputView, saliencyView]) context.clearRect(0, 0, 28, 28);
    view.dataset.layers = "0";
  }

  function show(answer) {
    const shown = answer.shown; // one digit: a number's last, the one just written
    const sure = `${shown.class_name}, ${(shown.confidence * 100).toFixed(1)}%`;
    const which = shown.of > 1 ? `digit ${shown.digit + 1} of ${shown.of} is` : "the answer is";
    statusView.textContent = `${answer.arch}: ${answer.layers.length} layers; ${which} ${sure}`;
    drawGrey(inputView, answer.input.flat().map((value) => Math.round(value * 255)), 28, 28);
    drawSaliency(answer.input, answer.saliency);
    drawScores(answer.class_names, shown.probabilities, shown.label);
    drawLayers(answer.layers);
    view.dataset.layers = String(answer.layers.length);
  }

  function drawGrey(context, values, width, height) {
    const image = context.createImageData(width, height);
    for (let i = 0; i < width * height; i++) image.data.set([values[i], values[i], values[i], 255], i * 4);
    context.putImageData(image, 0, 0);
  }

  // As `digitcnn explain` draws it: the ink at half strength on white, red for, blue against, stronger where larger.
  function drawSaliency(input, saliency) {
    const values = saliency.flat();
    const limit = Math.max(...values.map(Math.abs)) || 1;
    const ink = input.flat();
    const image = saliencyView.createImageData(28, 28);
    for (let i = 0; i < 28 * 28; i++) {
      const grey = 255 - ink[i] * 128;
      const alpha = Math.sqrt(Math.min(1, Math.abs(values[i]) / limit));
      const colour = values[i] > 0 ? [214, 39, 40] : [33, 102, 172];
      const mixed = colour.map((channel) => Math.round(grey * (1 - alpha) + channel * alpha));
      image.data.set([...mixed, 255], i * 4);
    }
    saliencyView.putImageData(image, 0, 0);
  }

  function drawScores(names, probabilities, top) {
    scoresView.replaceChildren();
    names.forEach((name, index) => {
      const item = document.createElement("li");
      if (index === top) item.className = "top";
      const percent = (probabilities[index] * 100).toFixed(1);
      item.innerHTML = `<span></span><span class="bar"></span><span>${percent}%</span>`;
      item.firstChild.textContent = name; // a class name is text, never markup
      item.querySelector(".bar").style.width = `${Math.max(probabilities[index] * 100, 0.5)}%`;
      scoresView.appendChild(item);
    });
  }

  // Rows are rebuilt only when the layers change (another network); while drawing, the tiles are repainted in place.
  function drawLayers(layers) {
    const signature = layers.map((layer) => `${layer.label}/${layer.channels.length}`).join("|");
    if (rowsView.dataset.signature !== signature) {
      rowsView.replaceChildren(...layers.map(buildRow));
      rowsView.dataset.signature = signature;
    }
    layers.forEach((layer, index) => {
      const [, height, width] = layer.shape;
      const bytes = Uint8Array.from(atob(layer.tiles), (character) => character.charCodeAt(0));
      const tiles = rowsView.children[index].querySelectorAll("canvas");
      layer.channels.forEach((channel, position) => {
        const tile = tiles[position];
        tile.title = `channel ${channel} of ${layer.shape[0]}`;
        tile.dataset.channel = channel;
        drawGrey(tile.getContext("2d"), bytes.subarray(position * height * width), width, height);
      });
    });
  }

  function buildRow(layer) {
    const [channels, height, width] = layer.shape;
    const row = document.createElement("section");
    row.className = "inside-row";
    row.dataset.kind = layer.kind;
    const title = document.createElement("h3");
    title.textContent = layer.label;
    const note = document.createElement("small");
    const shown = layer.channels.length < channels ? `the ${layer.channels.length} most active of ${channels} channels` : `all ${channels} channels`;
    note.textContent = `${layer.parts.join(" → ")}; ${shown}`;
    const tiles = document.createElement("div");
    tiles.className = "tiles";
    const size = Math.max(SMALLEST_TILE, Math.round(height * TILE_PIXELS));
    for (let i = 0; i < layer.channels.length; i++) {
      const tile = document.createElement("canvas");
      tile.className = "tile";
      tile.width = width;
      tile.height = height;
      tile.style.setProperty("--tile-size", `${size}px`);
      tile.addEventListener("click", () => enlarge(tile));
      tiles.appendChild(tile);
    }
    row.append(title, note, tiles);
    return row;
  }

  // A tap enlarges a tile (as hovering does with a mouse); another tap, or a tap on another tile, shrinks it.
  function enlarge(tile) {
    const was = tile.classList.contains("enlarged");
    for (const other of rowsView.querySelectorAll(".tile.enlarged")) other.classList.remove("enlarged");
    tile.classList.toggle("enlarged", !was);
  }

  listModels().catch(() => clear("The server did not list its networks"));
})();
