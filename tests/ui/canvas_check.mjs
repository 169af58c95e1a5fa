// Drives ComfyUI's real web frontend in headless Chromium and measures each template as an artist meets it.
// Called by tests/ui/test_canvas.py: `node canvas_check.mjs job.json`.
// job.json: {url, chromium, playwrightCore (the package's folder), artifacts, portrait, video, serverLog, label,
// tiny: {checkpoint, lora, resolution, steps}, templates: [{name, file}], olderGraphs: [{name, file}]}; prints one JSON
// report.
// Per template, in a 1366 x 768 window: load it by a drop event, note dialogs and console errors, read the widget
// values and the stored view (what text it cuts, what the minimap covers), save it the way the editor does (Ctrl+S)
// and fetch the saved file, pick the portrait and the video in the loaders, fit the view and measure node rectangles,
// links drawn under nodes and the zoom; then run it (tiny model, live previews on: the server runs with
// --preview-method auto) and measure again after the run, fitted to a 1366 x 768 and to a 1920 x 1080 window, with a
// screenshot of each.
import fs from 'fs';
import path from 'path';
import { pathToFileURL } from 'url';

const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { chromium } = await import(pathToFileURL(path.join(job.playwrightCore, 'index.mjs')).href);
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
const LAPTOP = { width: 1366, height: 768 };
const DESKTOP = { width: 1920, height: 1080 };
const RUN_TIMEOUT_MS = 240000; // one run of a template with the tiny model on a busy CPU
const POLL_MS = 500;
const SETTLE_MS = 1500; // the frontend finishes loading previews and layout after its promises resolve
const LINK_STROKE = 5; // links are 3 px wide with a 1 px border on each side
const SAMPLE_STEP = 4; // graph pixels between points tested inside a node
const END_MARGIN = 24; // a link may run this far inside the node it starts or ends at (slots sit inside its edges)
const STEP_TIMEOUT_MS = 60000; // any one browser step or request; a stuck one fails the run instead of hanging it
const TEMPLATE_TIMEOUT_MS = 420000;

function fetchWithin(url) {
  return fetch(url, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) });
}

function within(ms, promise, what) {
  let timer;
  const expired = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} took over ${ms} ms`)), ms); });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

async function openApp(browser) {
  const context = await browser.newContext({ viewport: LAPTOP, acceptDownloads: false });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  const consoleErrors = [];
  const phase = { name: 'startup' }; // errors are told apart by when they happen: startup, load, picking
  page.on('console', (message) => {
    if (message.type() === 'error') {
      consoleErrors.push({ phase: phase.name, text: message.text(), url: message.location().url || '' });
    }
  });
  page.on('pageerror', (error) => consoleErrors.push({ phase: phase.name, text: String(error), url: '' }));
  await page.goto(job.url);
  await page.waitForFunction(() => window.app?.graph && window.app?.canvas && window.app?.extensionManager, null,
    { timeout: 120000 });
  await page.waitForTimeout(SETTLE_MS);
  return { context, page, consoleErrors, phase };
}

async function dropFile(page, name, text) {
  const transfer = await page.evaluateHandle(([content, fileName]) => {
    const data = new DataTransfer();
    data.items.add(new File([content], fileName, { type: 'application/json' }));
    return data;
  }, [text, name]);
  await page.dispatchEvent('#graph-canvas', 'drop', { dataTransfer: transfer });
  await page.waitForTimeout(SETTLE_MS);
}

async function saveLikeTheEditor(page, fileName) {
  const viewport = page.viewportSize();
  await page.mouse.click(viewport.width / 2, viewport.height - 60); // focus the canvas (an empty spot low down)
  await page.keyboard.press('Control+s');
  await page.waitForTimeout(800);
  await page.keyboard.press('Enter'); // accept the file name the save prompt offers
  await page.waitForTimeout(SETTLE_MS);
  const reply = await fetchWithin(`${job.url}/api/userdata/${encodeURIComponent(`workflows/${fileName}`)}`);
  return reply.ok ? await reply.json() : { error: `saved file not found (HTTP ${reply.status})` };
}

function graphState(page) {
  return page.evaluate(() => {
    const graph = window.app.graph;
    return {
      nodes: graph._nodes.map((node) => ({
        id: node.id, type: node.type, title: node.title, rect: [...node.boundingRect],
        size: [...node.size], widgets: (node.widgets || []).filter((w) => w.serialize !== false).map((w) => w.value),
        unknown: node.constructor?.nodeData === undefined && node.type !== 'Note' && node.type !== 'MarkdownNote',
        // a text box (the Note's) that needs scrolling shows less than its text
        textHidden: (node.widgets || []).some((w) => w.element && w.element.scrollHeight > w.element.clientHeight + 1),
      })),
      scale: window.app.canvas.ds.scale,
    };
  });
}

function viewState(page) {
  // At the current view: what text the frontend cuts (titles wider than the node less two title heights; widget
  // labels whose label, value and padding do not fit: LGraphNode.drawTitleText, BaseWidget.drawTruncatingText),
  // which nodes' title or widget rows the minimap covers, the zoom, and whether the canvas draws text at it.
  return page.evaluate(() => {
    const app = window.app;
    const canvas = app.canvas;
    canvas.setDirty(true, true);
    canvas.draw(true, true);
    const context = document.createElement('canvas').getContext('2d');
    const cut = [];
    for (const node of app.graph._nodes) {
      context.font = canvas.title_text_font;
      const title = node.getTitle?.() ?? node.title;
      const titleWidth = context.measureText(title).width;
      if (titleWidth > node.size[0] - 2 * window.LiteGraph.NODE_TITLE_HEIGHT) cut.push([node.id, 'title', title, Math.ceil(titleWidth)]);
      context.font = canvas.inner_text_font;
      for (const widget of node.widgets || []) {
        if (widget.element || typeof widget.drawTruncatingText !== 'function' || ['button', 'toggle'].includes(widget.type)) continue;
        const label = widget.displayName ?? widget.label ?? widget.name;
        const value = String(widget._displayValue ?? widget.value ?? '');
        const needed = context.measureText(label).width + 5 + context.measureText(value).width;
        const padding = widget.type === 'text' ? 60 : 85; // margins and paddings as drawTruncatingText is called
        if (needed > node.size[0] - padding) cut.push([node.id, widget.name, `${label} | ${value}`, Math.ceil(needed + padding)]);
      }
    }
    const map = document.querySelector('.minimap-main-container');
    const box = canvas.canvas.getBoundingClientRect();
    const m = map && map.getBoundingClientRect().width > 0 ? map.getBoundingClientRect() : null;
    const minimap = m ? [m.left, m.top, m.width, m.height] : null;
    const covered = [];
    const offCanvas = []; // nodes whose title or widget rows are not all on the canvas (a pan away)
    const { scale, offset } = canvas.ds;
    for (const node of app.graph._nodes) {
      const widgetsEnd = Math.max(0, ...(node.widgets || []).filter((w) => !w.element && (w.y ?? w.last_y) !== undefined)
        .map((w) => (w.y ?? w.last_y) + (w.computedHeight ?? window.LiteGraph.NODE_WIDGET_HEIGHT)));
      const bottom = node.type === 'Note' ? node.size[1] : Math.max(widgetsEnd, (node.inputs?.length ?? 0) * 20);
      const left = box.left + (node.pos[0] + offset[0]) * scale;
      const top = box.top + (node.pos[1] - window.LiteGraph.NODE_TITLE_HEIGHT + offset[1]) * scale;
      const right = box.left + (node.pos[0] + node.size[0] + offset[0]) * scale;
      const lower = box.top + (node.pos[1] + bottom + offset[1]) * scale;
      if (m && left < m.right && m.left < right && top < m.bottom && m.top < lower) covered.push(node.id);
      if (left < box.left || top < box.top || right > box.right || lower > box.bottom) offCanvas.push(node.id);
    }
    return { scale: canvas.ds.scale, offset: [...canvas.ds.offset], canvas: [canvas.canvas.width, canvas.canvas.height],
      lowQuality: Boolean(canvas.low_quality), lowQualityBelow: canvas._lowQualityZoomThreshold ?? null,
      cutText: cut, minimap, minimapCovers: covered, offCanvas };
  });
}

async function runTiny(page) {
  // The template with the tiny model at a small resolution and few steps, queued as the Run button does; waits
  // until the server has finished it. Returns the run's status and how many LoRA merges the server logged.
  await page.evaluate((tiny) => {
    for (const node of window.app.graph._nodes) {
      for (const widget of node.widgets || []) {
        let value;
        if (node.type === 'XPortraitLoadModel' && widget.name === 'checkpoint') value = tiny.checkpoint;
        if (node.type === 'XPortraitLoRA' && widget.name === 'lora_name') value = tiny.lora;
        if (widget.name === 'resolution') value = tiny.resolution;
        if (widget.name === 'steps') value = tiny.steps;
        if (value === undefined) continue;
        widget.value = value;
        widget.callback?.(value);
      }
    }
  }, job.tiny);
  const logBefore = fs.readFileSync(job.serverLog, 'utf8').length;
  const before = Object.keys(await (await fetchWithin(`${job.url}/api/history`)).json());
  await page.evaluate(() => window.app.queuePrompt(0, 1));
  const started = Date.now();
  let entry;
  while (!entry && Date.now() - started < RUN_TIMEOUT_MS) {
    await page.waitForTimeout(POLL_MS);
    const history = await (await fetchWithin(`${job.url}/api/history`)).json();
    const added = Object.keys(history).filter((id) => !before.includes(id));
    if (added.length && history[added[0]].status?.completed !== undefined) entry = history[added[0]];
  }
  await page.waitForTimeout(3 * SETTLE_MS); // the last previews and the output video arrive over the websocket
  const log = fs.readFileSync(job.serverLog, 'utf8').slice(logBefore);
  return { status: entry ? entry.status.status_str : 'timed out', seconds: (Date.now() - started) / 1000,
    messages: entry ? entry.status.messages.map(([kind]) => kind) : [],
    // inside ComfyUI a LoRA is applied as core weight patches (nodes/host.py), logged as 'layers patched'
    loraMerges: log.split('\n').filter((line) => /layers (merged|patched) at strength/.test(line)).length };
}

async function pickFiles(page) {
  await page.evaluate(([portrait, video]) => {
    for (const node of window.app.graph._nodes) {
      const widget = node.widgets?.find((w) => (node.type === 'LoadImage' && w.name === 'image')
        || (node.type === 'LoadVideo' && w.name === 'file'));
      if (!widget) continue;
      widget.value = node.type === 'LoadImage' ? portrait : video;
      widget.callback?.(widget.value);
    }
  }, [job.portrait, job.video]);
  await page.waitForTimeout(3 * SETTLE_MS);
}

async function measure(page) {
  // Fit View fits the selection when there is one (the click that focuses the canvas for Ctrl+S may have selected a
  // node): nothing selected, it fits the whole graph
  await page.evaluate(() => {
    const { canvas } = window.app;
    (canvas.deselectAll ?? canvas.deselectAllNodes).call(canvas);
    return window.app.extensionManager.command.execute('Comfy.Canvas.FitView');
  });
  await page.waitForTimeout(SETTLE_MS);
  return page.evaluate(([stroke, step, endMargin]) => {
    const app = window.app;
    app.canvas.setDirty(true, true);
    app.canvas.draw(true, true);
    const nodes = app.graph._nodes;
    const rects = new Map(nodes.map((node) => [node.id, [...node.boundingRect]]));
    const overlaps = [];
    for (let i = 0; i < nodes.length; i++) {
      for (let j = i + 1; j < nodes.length; j++) {
        const [ax, ay, aw, ah] = rects.get(nodes[i].id);
        const [bx, by, bw, bh] = rects.get(nodes[j].id);
        if (ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah) overlaps.push([nodes[i].id, nodes[j].id]);
      }
    }
    const context = document.createElement('canvas').getContext('2d');
    context.lineWidth = stroke;
    const linksUnder = [];
    const links = app.graph._links ?? app.graph.links;
    for (const link of links.values()) {
      if (!link.path) { linksUnder.push([link.id, null, 'link was not drawn']); continue; }
      for (const node of nodes) {
        const [x, y, w, h] = rects.get(node.id);
        const ends = node.id === link.origin_id || node.id === link.target_id;
        const left = x + (ends ? endMargin : 0), right = x + w - (ends ? endMargin : 0);
        let under = false;
        for (let px = left; px <= right && !under; px += step) {
          for (let py = y; py <= y + h && !under; py += step) under = context.isPointInStroke(link.path, px, py);
        }
        if (under) linksUnder.push([link.id, node.id, `${link.origin_id}:${link.origin_slot} -> ${link.target_id}:${link.target_slot}`]);
      }
    }
    const all = [...rects.values(), ...app.graph._groups.map((group) => [...group._bounding])];
    const bounds = [Math.min(...all.map((r) => r[0])), Math.min(...all.map((r) => r[1])),
      Math.max(...all.map((r) => r[0] + r[2])), Math.max(...all.map((r) => r[1] + r[3]))];
    const box = app.canvas.canvas.getBoundingClientRect();
    return { scale: app.canvas.ds.scale, offset: [...app.canvas.ds.offset], canvas: [app.canvas.canvas.width,
      app.canvas.canvas.height], canvasOnPage: [box.left, box.top], bounds, overlaps, linksUnder,
      lowQuality: Boolean(app.canvas.low_quality), lowQualityBelow: app.canvas._lowQualityZoomThreshold ?? null };
  }, [LINK_STROKE, SAMPLE_STEP, END_MARGIN]);
}

function dialogTexts(page) {
  return page.evaluate(() => [...document.querySelectorAll('.p-dialog')].map((dialog) => dialog.innerText.slice(0, 500)));
}

async function fitWithTwoMoreNodes(page) {
  // Room to grow: the artist adds two nodes (here two core image nodes) in columns to the right of the graph; the
  // zoom the frontend's Fit View then picks. The two are removed again.
  const scale = await page.evaluate(async () => {
    const { app } = window;
    const all = [...app.graph._nodes.map((node) => [...node.boundingRect]),
      ...app.graph._groups.map((group) => [...group._bounding])];
    let x = Math.max(...all.map((r) => r[0] + r[2])) + 40;
    const y = Math.min(...all.map((r) => r[1])) + window.LiteGraph.NODE_TITLE_HEIGHT;
    const added = [];
    for (const type of ['ImageScaleBy', 'ImageScale']) {
      const node = window.LiteGraph.createNode(type);
      node.pos = [x, y];
      app.graph.add(node);
      added.push(node);
      x += node.size[0] + 40;
    }
    app.canvas.setDirty(true, true);
    app.canvas.draw(true, true); // the frontend fits the node rectangles it computed when it last drew them
    await app.extensionManager.command.execute('Comfy.Canvas.FitView');
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const fitted = { scale: app.canvas.ds.scale, added: added.map((node) => [...node.boundingRect]) };
    for (const node of added) app.graph.remove(node);
    return fitted;
  });
  return scale;
}

async function checkTemplate(browser, template) {
  const { context, page, consoleErrors, phase } = await openApp(browser);
  const text = fs.readFileSync(template.file, 'utf8');
  const fileName = path.basename(template.file);
  phase.name = 'load';
  await dropFile(page, fileName, text);
  const report = { name: template.name, dialogsAfterLoad: await dialogTexts(page), loaded: await graphState(page) };
  report.storedView = await viewState(page); // as the template opens on a laptop, minimap on
  report.saved = await saveLikeTheEditor(page, fileName);
  phase.name = 'picking';
  await pickFiles(page);
  report.afterPicking = await graphState(page);
  report.measured = await measure(page);
  await page.waitForTimeout(500);
  report.screenshot = path.join(job.artifacts, `${job.label} ${template.name} picked 1366.png`);
  await page.screenshot({ path: report.screenshot });
  phase.name = 'run';
  report.run = await runTiny(page);
  report.afterRun = {};
  for (const viewport of [LAPTOP, DESKTOP]) {
    await page.setViewportSize(viewport);
    await page.waitForTimeout(SETTLE_MS);
    const size = `${viewport.width}x${viewport.height}`;
    report.afterRun[size] = { nodes: (await graphState(page)).nodes, measured: await measure(page), view: await viewState(page) };
    await page.waitForTimeout(500);
    // at Fit View, before the two more nodes below change the zoom
    report.afterRun[size].screenshot = path.join(job.artifacts, `${job.label} ${template.name} after run ${size}.png`);
    await page.screenshot({ path: report.afterRun[size].screenshot });
    if (viewport === DESKTOP) report.afterRun[size].fitWithTwoMoreNodes = await fitWithTwoMoreNodes(page);
  }
  report.consoleErrors = consoleErrors;
  await context.close();
  return report;
}

async function checkOlderGraph(browser, graph) {
  // A graph saved before one of its nodes gained a widget (at the end of its widgets): what the frontend loads.
  const { context, page, consoleErrors } = await openApp(browser);
  await dropFile(page, path.basename(graph.file), fs.readFileSync(graph.file, 'utf8'));
  const report = { name: graph.name, dialogs: await dialogTexts(page), loaded: await graphState(page), consoleErrors };
  await context.close();
  return report;
}

async function checkTemplatesBrowser(browser) {
  // What the Templates browser lists for the pack, and whether each card's thumbnail and file load.
  const { context, page } = await openApp(browser);
  const listed = await (await fetchWithin(`${job.url}/workflow_templates`)).json();
  const cards = [];
  for (const [module, names] of Object.entries(listed)) {
    for (const name of names) {
      const base = `${job.url}/api/workflow_templates/${encodeURIComponent(module)}/${encodeURIComponent(name)}`;
      const thumbnail = await fetchWithin(`${base}.jpg`);
      const workflow = await (await fetchWithin(`${base}.json`)).json();
      cards.push({ module, name, thumbnailStatus: thumbnail.status,
        thumbnailType: thumbnail.headers.get('content-type'), isUiWorkflow: Array.isArray(workflow.nodes) });
    }
  }
  await context.close();
  return cards;
}

const browser = await chromium.launch({ executablePath: job.chromium, args: CHROMIUM_FLAGS });
try {
  const reports = [];
  for (const template of job.templates) {
    try { // one template's failure is reported with it; the others are still measured
      reports.push(await within(TEMPLATE_TIMEOUT_MS, checkTemplate(browser, template), `checking ${template.name}`));
    } catch (error) {
      reports.push({ name: template.name, error: String(error && error.stack || error) });
    }
  }
  const templatesBrowser = await checkTemplatesBrowser(browser);
  const olderGraphs = [];
  for (const graph of job.olderGraphs) {
    olderGraphs.push(await within(TEMPLATE_TIMEOUT_MS, checkOlderGraph(browser, graph), `loading ${graph.name}`));
  }
  process.stdout.write(JSON.stringify({ reports, templatesBrowser, olderGraphs }));
} finally {
  await browser.close();
}
