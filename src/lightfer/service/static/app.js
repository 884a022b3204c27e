// lightfer web page: send an image (file, drop, paste or webcam frame) to POST /v1/analyze,
// draw the boxes from the JSON on a canvas and a probability bar chart per face. No libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const WEBCAM_INTERVAL_MS = 300;  // one frame every few hundred ms, never more than one in flight
const COLORS = {
  angry: "#ef4444", disgust: "#84cc16", fear: "#a855f7", happy: "#f59e0b", sad: "#3b82f6",
  surprise: "#06b6d4", neutral: "#94a3b8", contempt: "#f97316",
};

const state = { webcam: null, framesSent: 0, busy: false };
window.lightfer = state;  // for tests and curious users: state.lastResult is the last JSON answer

function colorFor(label) {
  if (label && COLORS[label]) return COLORS[label];
  let h = 0;
  for (const ch of String(label)) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${h}, 70%, 50%)`;
}

function setState(name, message) {
  document.body.dataset.state = name;
  if (message !== undefined) $("status").textContent = message;
}

function showError(message) {
  const el = $("error");
  el.textContent = message;
  el.hidden = !message;
}

function queryString(annotate) {
  const params = new URLSearchParams();
  const model = $("model").value;
  if (model) params.set("model", model);
  params.set("score_threshold", $("threshold").value);
  if ($("tta").value) params.set("tta", $("tta").value);
  if (annotate) params.set("annotate", "true");
  return params.toString();
}

async function postImage(blob, name, annotate) {
  const form = new FormData();
  form.append("file", blob, name);
  const t0 = performance.now();
  const response = await fetch(`/v1/analyze?${queryString(annotate)}`, { method: "POST", body: form });
  let body;
  try { body = await response.json(); } catch (e) { body = { detail: `HTTP ${response.status}` }; }
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(`${response.status}: ${detail}`);
  }
  body._roundTripMs = performance.now() - t0;
  return body;
}

function drawResult(picture, result) {
  canvas.width = picture.width;
  canvas.height = picture.height;
  ctx.drawImage(picture, 0, 0);
  const lw = Math.max(2, Math.round(Math.max(picture.width, picture.height) / 250));
  const font = Math.max(12, Math.round(Math.max(picture.width, picture.height) / 40));
  ctx.font = `bold ${font}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  result.faces.forEach((face, i) => {
    const [x1, y1, x2, y2] = face.box;
    const color = colorFor(face.label);
    ctx.lineWidth = lw;
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${i + 1}: ${face.label ?? "face"} ${face.label ? Math.round(face.confidence * 100) + "%" : ""}`;
    const tw = ctx.measureText(text).width + 8;
    const ty = y1 > font + 6 ? y1 : y2 + font + 6;
    ctx.fillStyle = color;
    ctx.fillRect(x1 - lw / 2, ty - font - 4, tw, font + 4);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x1 + 4, ty - 1);
    ctx.fillStyle = "#22c55e";
    for (const [px, py] of face.landmarks || []) {
      ctx.beginPath();
      ctx.arc(px, py, lw, 0, 2 * Math.PI);
      ctx.fill();
    }
  });
}

function renderFaces(result) {
  const container = $("faces");
  container.replaceChildren();
  result.faces.forEach((face, i) => {
    const card = document.createElement("div");
    card.className = "face";
    card.dataset.label = face.label ?? "";
    const title = document.createElement("h3");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colorFor(face.label);
    title.append(swatch, `Face ${i + 1}: ${face.label ?? "?"}`);
    card.append(title);
    for (const [label, p] of Object.entries(face.probs || {})) {
      const row = document.createElement("div");
      row.className = "bar-row" + (label === face.label ? " top" : "");
      row.dataset.label = label;
      const name = document.createElement("span");
      name.textContent = label;
      const track = document.createElement("div");
      track.className = "bar-track";
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${(100 * p).toFixed(1)}%`;
      bar.style.background = colorFor(label);
      bar.dataset.p = String(p);
      track.append(bar);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = `${(100 * p).toFixed(1)}%`;
      row.append(name, track, value);
      card.append(row);
    }
    container.append(card);
  });
}

function showResult(picture, result, drawBoxes) {
  state.lastResult = result;
  drawResult(picture, drawBoxes ? result : { ...result, faces: [] });
  renderFaces(result);
  $("face-count").textContent = String(result.faces.length);
  const server = Object.values(result.timings_ms || {}).reduce((a, b) => a + b, 0);
  $("timing").textContent = `${result.width}×${result.height} px · server ${server.toFixed(0)} ms · round trip ${result._roundTripMs.toFixed(0)} ms`;
  const shown = { ...result };
  delete shown._roundTripMs;
  delete shown.annotated_image;
  $("result-json").textContent = JSON.stringify(shown, null, 2);
}

async function decodeLocally(blob) {
  try {
    return await createImageBitmap(blob, { imageOrientation: "from-image" });
  } catch (e) {
    return null;  // a format this browser can't draw (e.g. TIFF): the server annotates it instead
  }
}

async function loadImageUrl(url) {
  const img = new Image();
  img.src = url;
  await img.decode();
  return img;
}

async function analyzeFile(file) {
  if (!file) return;
  if (state.webcam) stopWebcam();
  showError("");
  setState("busy", `Analysing ${file.name || "image"}…`);
  try {
    const picture = await decodeLocally(file);
    const result = await postImage(file, file.name || "image", picture === null);
    if (picture) showResult(picture, result, true);
    else showResult(await loadImageUrl(result.annotated_image), result, false);  // the server drew the boxes
    setState("done", `${file.name || "image"}: ${result.faces.length} face(s).`);
  } catch (e) {
    showError(String(e.message || e));
    setState("error", "Analysis failed.");
  }
}

// ---- webcam: grab a frame, send it, wait for the answer and the interval, repeat ----
async function startWebcam() {
  showError("");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("This browser gives no camera access here (it needs https or localhost).");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    showError(`Camera unavailable: ${e.message || e}`);
    setState("error");
    return;
  }
  const video = $("video");
  video.srcObject = stream;
  await video.play();
  state.webcam = { stream, timer: null };
  $("webcam").textContent = "Stop webcam";
  $("webcam").classList.add("on");
  setState("streaming", "Webcam on: analysing a frame every few hundred ms.");
  webcamTick();
}

function stopWebcam() {
  if (!state.webcam) return;
  clearTimeout(state.webcam.timer);
  state.webcam.stream.getTracks().forEach((t) => t.stop());
  state.webcam = null;
  $("webcam").textContent = "Start webcam";
  $("webcam").classList.remove("on");
  $("webcam-status").textContent = "";
  setState("done", "Webcam stopped.");
}

async function webcamTick() {
  const cam = state.webcam;
  if (!cam) return;
  const t0 = performance.now();
  const video = $("video");
  const frame = document.createElement("canvas");
  frame.width = video.videoWidth || 640;
  frame.height = video.videoHeight || 480;
  frame.getContext("2d").drawImage(video, 0, 0, frame.width, frame.height);
  try {
    const blob = await new Promise((resolve) => frame.toBlob(resolve, "image/jpeg", 0.85));
    const result = await postImage(blob, "webcam.jpg", false);
    state.framesSent += 1;
    if (state.webcam !== cam) return;  // stopped while waiting
    showResult(frame, result, true);
    showError("");
    $("webcam-status").textContent = `frame ${state.framesSent} · ${result._roundTripMs.toFixed(0)} ms`;
  } catch (e) {
    showError(String(e.message || e));
  }
  if (state.webcam === cam) {
    cam.timer = setTimeout(webcamTick, Math.max(0, WEBCAM_INTERVAL_MS - (performance.now() - t0)));
  }
}

// ---- wiring ----
async function loadModels() {
  try {
    const info = await (await fetch("/v1/models")).json();
    const select = $("model");
    for (const m of info.models) {
      const opt = document.createElement("option");
      opt.value = m.name;
      opt.textContent = m.description ? `${m.name} — ${m.description}` : m.name;
      opt.selected = m.name === info.default;
      select.append(opt);
    }
  } catch (e) {
    showError(`Could not list the models: ${e.message || e}`);
  }
}

$("file").addEventListener("change", (e) => analyzeFile(e.target.files[0]));
$("threshold").addEventListener("input", (e) => { $("threshold-value").textContent = Number(e.target.value).toFixed(2); });
$("webcam").addEventListener("click", () => (state.webcam ? stopWebcam() : startWebcam()));
const drop = $("drop");
for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
drop.addEventListener("drop", (e) => analyzeFile(e.dataTransfer.files[0]));
document.addEventListener("paste", (e) => {
  const item = [...(e.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
  if (item) analyzeFile(item.getAsFile());
});
loadModels().then(() => setState("ready"));
