// Drives Debian's Chromium through the interview page for tests/test_web_page.py.
//
//   node drive.mjs <scenario> '<json input>'     → one JSON object (observations) on stdout
//
// Every participant gets its own browser context (its own storage and BroadcastChannel), so
// whatever one page sees of another came through the server. The script only waits and records;
// the pytest side asserts on what it reports. A wait that times out is reported, not thrown.
import { chromium } from 'playwright-core'

const [scenario, raw] = process.argv.slice(2)
const input = JSON.parse(raw)
const WAIT = input.timeoutMs ?? 15000
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync']

const out = { consoleErrors: [], timeouts: [] }

async function open (browser, url, label) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } })
  const page = await context.newPage()
  page.on('console', (msg) => { if (msg.type() === 'error') out.consoleErrors.push(`${label}: ${msg.text()}`) })
  page.on('pageerror', (err) => out.consoleErrors.push(`${label}: ${err.message}`))
  const started = Date.now()
  await page.goto(url)
  return { page, context, started, label }
}

async function until (p, what, fn, arg) {
  try {
    await p.page.waitForFunction(fn, arg, { timeout: WAIT, polling: 'raf' })
    return true
  } catch {
    out.timeouts.push(`${p.label}: ${what}`)
    return false
  }
}

const connected = (p) => until(p, 'connected and editable or read-only as its role says', () =>
  document.getElementById('connection')?.dataset.state === 'connected' &&
  document.getElementById('status')?.textContent !== '…')

// The editor's text as the screen shows it: the lines without remote-cursor widgets.
const screenText = (p) => p.page.evaluate(() => [...document.querySelectorAll('.cm-content .cm-line')].map((line) => {
  const copy = line.cloneNode(true)
  copy.querySelectorAll('.cm-ySelectionCaret, .cm-widgetBuffer').forEach((w) => w.remove())
  return copy.textContent
}).join('\n'))

const waitText = (p, text) => until(p, `text ${JSON.stringify(text)}`, (want) =>
  [...document.querySelectorAll('.cm-content .cm-line')].map((line) => {
    const copy = line.cloneNode(true)
    copy.querySelectorAll('.cm-ySelectionCaret, .cm-widgetBuffer').forEach((w) => w.remove())
    return copy.textContent
  }).join('\n') === want, text)

const labels = (p) => p.page.evaluate(() => [...document.querySelectorAll('.cm-ySelectionInfo')].map((el) => ({
  name: el.textContent, opacity: getComputedStyle(el).opacity, width: el.getBoundingClientRect().width,
})))

const pageState = (p) => p.page.evaluate(() => ({
  editable: document.querySelector('.cm-content')?.getAttribute('contenteditable'),
  status: document.getElementById('status').textContent,
  language: document.getElementById('language').value,
  languageOptions: [...document.getElementById('language').options].map((o) => o.value),
  runDisabled: document.getElementById('run').disabled,
  output: document.getElementById('output').innerText,
  participants: [...document.querySelectorAll('#participants li')].map((li) => li.innerText.replace(/\s+/g, ' ').trim()),
  fatal: document.getElementById('fatal').hidden ? null : document.getElementById('fatal').textContent,
}))

async function typeInto (p, keys) {
  await p.page.locator('.cm-content').click()
  await p.page.keyboard.press('Control+End')
  for (const k of keys) {
    if (k.press) {
      // An open completion list would take Enter; never before Tab (Escape, Tab leaves the editor).
      if (k.press === 'Enter') await p.page.keyboard.press('Escape')
      await p.page.keyboard.press(k.press)
    }
    else await p.page.keyboard.type(k, { delay: 15 })
  }
}

async function latency (from, to, samples) {
  await typeInto(from, [{ press: 'Enter' }, '# '])
  await waitText(to, await screenText(from))
  await from.page.evaluate(() => {
    if (!window.__keys) {
      document.addEventListener('keydown', () => window.__keys.push(performance.timeOrigin + performance.now()), true)
    }
    window.__keys = []
  })
  const result = []
  for (let i = 0; i < samples; i++) {
    const before = await screenText(to)
    const seen = to.page.evaluate((n) => new Promise((resolve) => {
      const content = document.querySelector('.cm-content')
      const done = () => requestAnimationFrame(() => resolve(performance.timeOrigin + performance.now()))
      const obs = new MutationObserver(() => {
        if (window.interview.view.state.doc.length >= n) { obs.disconnect(); done() }
      })
      obs.observe(content, { childList: true, subtree: true, characterData: true })
    }), before.length + 1)
    await from.page.keyboard.type(String.fromCharCode(97 + (i % 26)))
    const t1 = await seen
    const t0 = await from.page.evaluate((k) => window.__keys[k], i)
    result.push(t1 - t0)
    await new Promise((resolve) => setTimeout(resolve, 30))
  }
  const sorted = [...result].sort((a, b) => a - b)
  return { samples: result.map((x) => Math.round(x * 10) / 10), median: (sorted[9] + sorted[10]) / 2, max: sorted.at(-1) }
}

async function interview (browser) {
  const i = await open(browser, `${input.links.interviewer}&name=Ivy`, 'interviewer')
  const c = await open(browser, input.links.candidate, 'candidate') // no name: the page asks
  out.askedName = await until(c, 'name form', () => !document.getElementById('name-form').hidden)
  await c.page.getByLabel('Your name').fill('Cara')
  await c.page.getByRole('button', { name: 'Join' }).click()
  await connected(i)
  out.loadToConnectedMs = Date.now() - i.started
  await connected(c)
  out.runButtonName = await c.page.getByRole('button', { name: 'Run' }).count()
  out.outputAreas = await c.page.getByLabel('Output').count()
  out.languageSelects = await c.page.getByLabel('Language').count()

  // The candidate types a function: Enter auto-indents, Shift+Tab dedents, Tab indents.
  await typeInto(c, ['def add(a, b):', { press: 'Enter' }, { press: 'Shift+Tab' }, { press: 'Tab' }, 'return a + b',
    { press: 'Enter' }, { press: 'Shift+Tab' }, 'print(add(2, 3))'])
  out.candidateTyped = await screenText(c)
  await waitText(i, out.candidateTyped)
  out.interviewerSees = await screenText(i)
  await until(i, 'label Cara', () => [...document.querySelectorAll('.cm-ySelectionInfo')].some((e) => e.textContent === 'Cara'))
  out.interviewerLabels = await labels(i)

  await typeInto(i, [{ press: 'Enter' }, 'print("hi from Ivy")'])
  out.interviewerTyped = await screenText(i)
  await waitText(c, out.interviewerTyped)
  out.candidateSees = await screenText(c)
  await until(c, 'label Ivy', () => [...document.querySelectorAll('.cm-ySelectionInfo')].some((e) => e.textContent === 'Ivy'))
  out.candidateLabels = await labels(c)
  await until(i, 'participants', () => document.querySelectorAll('#participants li').length >= 2)
  out.participantsSeenByInterviewer = (await pageState(i)).participants

  const runStarted = Date.now()
  await c.page.getByRole('button', { name: 'Run' }).click()
  const hasOutput = () => document.querySelector('#output .stdout')?.textContent === '5\nhi from Ivy\n'
  await until(c, 'run output', hasOutput)
  out.runRoundTripMs = Date.now() - runStarted
  await until(i, 'run output', hasOutput)
  out.outputs = { interviewer: (await pageState(i)).output, candidate: (await pageState(c)).output }
  if (input.screenshot) await i.page.screenshot({ path: input.screenshot, fullPage: true })

  // Python highlights `def` as a keyword; JavaScript does not know it.
  const defHighlighted = (p) => p.page.evaluate(() => [...document.querySelectorAll('.cm-line span')]
    .some((s) => s.textContent === 'def' && getComputedStyle(s).color !== getComputedStyle(s.parentElement).color))
  out.defHighlighted = { python: await defHighlighted(i) }
  await c.page.getByLabel('Language').selectOption('javascript')
  await until(i, 'language javascript', () => document.getElementById('language').value === 'javascript')
  await until(i, 'javascript highlighting', () => ![...document.querySelectorAll('.cm-line span')].some((s) => s.textContent === 'def'))
  out.defHighlighted.javascript = await defHighlighted(i)
  out.languageAfterChange = { interviewer: (await pageState(i)).language, candidate: (await pageState(c)).language }
  out.languageOptions = (await pageState(i)).languageOptions

  const o = await open(browser, `${input.links.observer}&name=Olga`, 'observer')
  await connected(o)
  await waitText(o, out.interviewerTyped)
  const beforeObserver = await screenText(o)
  await o.page.locator('.cm-content').click()
  await o.page.keyboard.type('zzz')
  await o.page.keyboard.press('Enter')
  await new Promise((resolve) => setTimeout(resolve, 500))
  out.observer = { ...(await pageState(o)), before: beforeObserver, after: await screenText(o), interviewerAfter: await screenText(i) }

  if (input.measure) out.latency = await latency(i, c, 20)

  const r = await fetch(input.patchUrl, { method: 'PATCH', headers: { Authorization: `Bearer ${input.interviewerToken}`, 'Content-Type': 'application/json' }, body: '{"status":"ended"}' })
  out.patchStatus = r.status
  const ended = () => document.getElementById('status').textContent === 'ended' &&
    document.querySelector('.cm-content').getAttribute('contenteditable') === 'false'
  await until(i, 'ended', ended)
  await until(c, 'ended', ended)
  const beforeEnd = await screenText(c)
  await c.page.locator('.cm-content').click()
  await c.page.keyboard.type('more')
  await new Promise((resolve) => setTimeout(resolve, 300))
  out.ended = { interviewer: await pageState(i), candidate: await pageState(c), before: beforeEnd, after: await screenText(c) }
  out.finalText = await screenText(i)
}

async function home (browser) {
  const h = await open(browser, input.home, 'home')
  await h.page.getByLabel('Title').fill('Key test')
  out.keyFieldVisibleAtStart = await h.page.getByLabel('API key').isVisible()
  await h.page.getByRole('button', { name: 'Create interview' }).click() // without the key first: refused
  await until(h, 'refusal message', () => document.getElementById('create-message').textContent.includes('API key'))
  out.messageWithoutKey = await h.page.locator('#create-message').textContent()
  await h.page.getByLabel('API key').fill(input.apiKey ?? '')
  await h.page.getByRole('button', { name: 'Create interview' }).click()
  await until(h, 'links', () => !document.getElementById('links-section').hidden)
  if (input.screenshot) await h.page.screenshot({ path: input.screenshot })
  out.links = await h.page.evaluate(() => Object.fromEntries(['interviewer', 'candidate', 'observer'].map((r) => [r, document.getElementById(`link-${r}`)?.value])))
  if (out.links.candidate) {
    const c = await open(browser, `${out.links.candidate}&name=Cara`, 'candidate')
    await connected(c)
    await typeInto(c, ['print(1)'])
    out.candidateState = await pageState(c)
    out.candidateText = await screenText(c)
  }
}

// The interviewer's controls: lock, the Run switch (a second interviewer page follows both) and
// the playback scrubber, which must leave the live editor alone.
async function controls (browser) {
  const i = await open(browser, `${input.links.interviewer}&name=Ivy`, 'interviewer')
  const c = await open(browser, `${input.links.candidate}&name=Cara`, 'candidate')
  await connected(i)
  await connected(c)
  const editable = (p) => p.page.evaluate(() => document.querySelector('.cm-content')?.getAttribute('contenteditable'))
  const badge = (p) => p.page.evaluate(() => {
    const el = document.getElementById('locked')
    return el && !el.hidden && el.getBoundingClientRect().width > 0 ? el.textContent : null
  })
  out.candidateControls = await c.page.getByLabel('Lock editor').count() + await c.page.getByLabel('Run enabled').count() +
    await c.page.getByLabel('Playback').count()
  out.startText = await screenText(c)
  out.initial = { lockChecked: await i.page.getByLabel('Lock editor').isChecked(), runChecked: await i.page.getByLabel('Run enabled').isChecked(),
    candidateEditable: await editable(c), candidateBadge: await badge(c) }

  await i.page.getByLabel('Lock editor').check()
  await until(c, 'locked', () => document.getElementById('editor').dataset.readonly === 'true')
  await until(c, 'Locked badge', () => !document.getElementById('locked').hidden)
  const i2 = await open(browser, `${input.links.interviewer}&name=Ian`, 'interviewer2')
  await connected(i2)
  await until(i2, 'lock checked', () => document.getElementById('lock').checked)
  await c.page.locator('.cm-content').click({ force: true })
  await c.page.keyboard.press('Control+End')
  await c.page.keyboard.type('zzz', { delay: 15 })
  await new Promise((resolve) => setTimeout(resolve, 1000))
  out.locked = { candidateEditable: await editable(c), candidateBadge: await badge(c), candidateText: await screenText(c),
    interviewerText: await screenText(i), secondInterviewerChecked: await i2.page.getByLabel('Lock editor').isChecked(),
    interviewerEditable: await editable(i) }

  await i.page.getByLabel('Lock editor').uncheck()
  await until(c, 'unlocked', () => document.getElementById('editor').dataset.readonly === 'false')
  await until(i2, 'lock unchecked', () => !document.getElementById('lock').checked)
  await typeInto(c, [{ press: 'Enter' }, 'print("after")'])
  out.unlocked = { candidateBadge: await badge(c), candidateText: await screenText(c),
    secondInterviewerChecked: await i2.page.getByLabel('Lock editor').isChecked() }
  await waitText(i, out.unlocked.candidateText)
  out.unlocked.interviewerText = await screenText(i)

  out.runDisabledBefore = await c.page.getByRole('button', { name: 'Run' }).isDisabled()
  await i.page.getByLabel('Run enabled').uncheck()
  await until(c, 'run disabled', () => document.getElementById('run').disabled)
  await until(i2, 'run switch off', () => !document.getElementById('run-enabled').checked)
  out.runDisabledAfter = await c.page.getByRole('button', { name: 'Run' }).isDisabled()
  out.interviewerRunDisabledAfter = await i.page.getByRole('button', { name: 'Run' }).isDisabled()
  out.secondInterviewerRunChecked = await i2.page.getByLabel('Run enabled').isChecked()

  const scrub = i.page.getByLabel('Playback', { exact: true })
  const shown = (p, want) => until(p, `playback ${JSON.stringify(want)}`, (w) => {
    const el = document.getElementById('playback-text')
    return !el.hidden && el.textContent === w
  }, want)
  await scrub.fill('0')
  await shown(i, input.starter)
  out.playbackStart = await i.page.getByLabel('Playback text').textContent()
  out.editorDuringPlayback = await screenText(i)
  out.candidateDuringPlayback = await screenText(c)
  await scrub.fill('1000')
  await shown(i, out.unlocked.candidateText)
  out.playbackEnd = await i.page.getByLabel('Playback text').textContent()
  if (input.screenshot) await i.page.screenshot({ path: input.screenshot, fullPage: true })
  await i.page.getByRole('button', { name: 'Live' }).click()
  out.playbackClosed = await i.page.evaluate(() => document.getElementById('playback-text').hidden)
  out.finalText = await screenText(i)
}

// Figures for bench/bench_web_page.py: page load to connected (fresh contexts, so nothing is
// cached), the bytes a first load transfers, and keystroke-to-remote-screen latency.
async function measure (browser) {
  out.loads = []
  for (let k = 0; k < (input.loads ?? 5); k++) {
    const p = await open(browser, `${input.links.candidate}&name=Load${k}`, `load${k}`)
    await connected(p)
    const ms = Date.now() - p.started
    const bytes = await p.page.evaluate(() => performance.getEntriesByType('resource')
      .filter((e) => e.name.includes('/static/'))
      .reduce((a, e) => ({ transfer: a.transfer + e.encodedBodySize, decoded: a.decoded + e.decodedBodySize, files: a.files + 1 }),
        { transfer: 0, decoded: 0, files: 0 }))
    out.loads.push({ ms, ...bytes })
    await p.context.close()
  }
  const i = await open(browser, `${input.links.interviewer}&name=Ivy`, 'interviewer')
  const c = await open(browser, `${input.links.candidate}&name=Cara`, 'candidate')
  await connected(i)
  await connected(c)
  out.latencyRounds = []
  for (let r = 0; r < (input.rounds ?? 3); r++) out.latencyRounds.push(await latency(i, c, 20))
}

// Bare WebSockets from a page of the server (its origin), offering subprotocols: what Chromium makes of
// the handshake (tests/test_wire_compat.py). A socket that stays open is closed after 1.5 s.
async function subprotocol (browser) {
  const p = await open(browser, input.page, 'sockets')
  out.sockets = await p.page.evaluate(({ urls, protocols }) => Promise.all(urls.map((url) => new Promise((resolve) => {
    const seen = { opened: false, error: false }
    const ws = new WebSocket(url, protocols)
    ws.onopen = () => { seen.opened = true; seen.protocol = ws.protocol; setTimeout(() => ws.close(), 1500) }
    ws.onerror = () => { seen.error = true }
    ws.onclose = (e) => { seen.code = e.code; resolve(seen) }
  }))), { urls: input.urls, protocols: input.protocols })
}

const browser = await chromium.launch({ executablePath: input.chromium, args: ARGS, timeout: 30000 })
const launched = Date.now()
try {
  if (scenario === 'interview') await interview(browser)
  else if (scenario === 'home') await home(browser)
  else if (scenario === 'controls') await controls(browser)
  else if (scenario === 'measure') await measure(browser)
  else if (scenario === 'subprotocol') await subprotocol(browser)
  else throw new Error(`unknown scenario ${scenario}`)
} catch (err) {
  out.error = String(err && err.stack ? err.stack : err)
} finally {
  out.wholeMs = Date.now() - launched
  await browser.close()
}
process.stdout.write(JSON.stringify(out) + '\n')
