// Teaching: after a wrong answer the person taps the right class; the image the model was sent (the drawing at the
// canvas's full 280x280, strokes and all, or the uploaded file) is kept in this browser's localStorage, and with
// `serve --samples DIR` on the server too. "Download samples" gives a zip of one folder per class, the layout
// `digitcnn finetune --data DIR` reads. The zip is written here: stored (uncompressed) entries, no library.
"use strict";

(() => {
  const STORAGE_KEY = "digitcnn.samples";
  const MAX_KEPT = 400; // localStorage holds ~5 MB; a canvas PNG is 5-20 kB as a data URL
  const correctView = document.getElementById("teach-correct");
  const labelsView = document.getElementById("teach-labels");
  const countView = document.getElementById("teach-count");
  const downloadButton = document.getElementById("teach-download");
  const forgetButton = document.getElementById("teach-forget");
  let current = null; // the image of the latest answer, as a Blob
  let serverKeeps = false;

  function kept() {
    try {
      return JSON.parse(localStorage.getItem(STORAGE_KEY) || "[]");
    } catch (error) {
      return [];
    }
  }

  function showCount(note) {
    const count = kept().length;
    countView.textContent = (count ? `${count} sample${count === 1 ? "" : "s"} taught` : "No samples taught yet") +
      (note ? ` (${note})` : "");
    downloadButton.disabled = forgetButton.disabled = count === 0;
  }

  function readAsDataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  async function teach(label) {
    if (!current) return;
    const image = current;
    const samples = kept();
    if (samples.length >= MAX_KEPT) return showCount(`this browser keeps at most ${MAX_KEPT}; download them first`);
    samples.push({ label, type: image.type || "image/png", data: await readAsDataUrl(image), taught: Date.now() });
    let note = "";
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(samples));
    } catch (error) {
      note = "this browser's storage is full; download them first";
    }
    correctView.hidden = true;
    if (serverKeeps && image.type === "image/png") {
      const form = new FormData();
      form.append("label", label);
      form.append("file", image, "sample.png");
      try {
        const response = await fetch("/api/samples", { method: "POST", body: form });
        note = note || (response.ok ? "also kept on the server" : (await response.json()).error);
      } catch (error) {
        note = note || "the server did not answer";
      }
    }
    showCount(note);
  }

  function showChoices(classes) {
    labelsView.replaceChildren();
    classes.forEach((name) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = name;
      button.dataset.label = name;
      button.addEventListener("click", () => teach(name));
      labelsView.appendChild(button);
    });
  }

  document.addEventListener("digitcnn:answer", (event) => {
    const answered = event.detail && event.detail.answer.label !== null;
    current = answered ? event.detail.image : null;
    correctView.hidden = !answered;
  });

  // --- a zip of stored entries (PKWARE APPNOTE 4.3: local headers, then the central directory, then its end) ---
  const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });

  function crc32(bytes) {
    let crc = 0xffffffff;
    for (const byte of bytes) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
    return (crc ^ 0xffffffff) >>> 0;
  }

  function zip(files) {
    const encoder = new TextEncoder();
    const parts = [];
    const directory = [];
    let offset = 0;
    const now = new Date();
    const time = (now.getHours() << 11) | (now.getMinutes() << 5) | (now.getSeconds() >> 1);
    const date = ((now.getFullYear() - 1980) << 9) | ((now.getMonth() + 1) << 5) | now.getDate();
    for (const file of files) {
      const name = encoder.encode(file.name);
      const crc = crc32(file.bytes);
      // Shared by the local header (from offset 4) and the central directory entry (from offset 6).
      const common = [[20, 2], [0x0800, 2], [0, 2], [time, 2], [date, 2], [crc, 4], [file.bytes.length, 4],
        [file.bytes.length, 4], [name.length, 2], [0, 2]]; // version 2.0, UTF-8 names, stored
      const local = record([[0x04034b50, 4], ...common], name);
      directory.push(record([[0x02014b50, 4], [20, 2], ...common, [0, 2], [0, 2], [0, 2], [0, 4], [offset, 4]], name));
      parts.push(local, file.bytes);
      offset += local.length + file.bytes.length;
    }
    const size = directory.reduce((total, entry) => total + entry.length, 0);
    const end = record([[0x06054b50, 4], [0, 2], [0, 2], [files.length, 2], [files.length, 2], [size, 4],
      [offset, 4], [0, 2]], new Uint8Array(0));
    return new Blob([...parts, ...directory, end], { type: "application/zip" });
  }

  function record(fields, name) {
    const length = fields.reduce((total, [, width]) => total + width, 0);
    const bytes = new Uint8Array(length + name.length);
    const view = new DataView(bytes.buffer);
    let at = 0;
    for (const [value, width] of fields) {
      if (width === 2) view.setUint16(at, value, true);
      else view.setUint32(at, value, true);
      at += width;
    }
    bytes.set(name, at);
    return bytes;
  }

  function dataUrlBytes(url) {
    const text = atob(url.slice(url.indexOf(",") + 1));
    return Uint8Array.from(text, (character) => character.charCodeAt(0));
  }

  const EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp",
    "image/bmp": "bmp", "image/tiff": "tif" };

  downloadButton.addEventListener("click", () => {
    const files = kept().map((sample, index) => ({
      name: `${sample.label}/sample-${String(index + 1).padStart(4, "0")}.${EXTENSIONS[sample.type] || "png"}`,
      bytes: dataUrlBytes(sample.data),
    }));
    const link = document.createElement("a");
    link.href = URL.createObjectURL(zip(files));
    link.download = "digitcnn-samples.zip";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  });

  forgetButton.addEventListener("click", () => {
    localStorage.removeItem(STORAGE_KEY);
    showCount("");
  });

  fetch("/api/health")
    .then((response) => response.json())
    .then((health) => {
      serverKeeps = Boolean(health.samples);
      showChoices(health.classes || ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    })
    .catch(() => showChoices(["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]));
  showCount("");
})();
