// The browsers the playground test drives, behind one interface: the slice of Playwright's API
// that playground.mjs uses (browser.newContext → context.newPage → page/locator calls).
//   chromium: Debian's chromium through playwright-core (Playwright's own API, unchanged).
//   firefox:  Debian's firefox-esr through puppeteer-core over WebDriver BiDi (Playwright drives
//             only its own patched Firefox, which cannot be downloaded here), wrapped below so the
//             same scenario code runs. What Firefox cannot emulate is said where it matters:
//             `isMobile`/`hasTouch` are not available over BiDi, so a phone is a 390 px viewport
//             and a tap is a click.
import { createRequire } from 'node:module';
import path from 'node:path';

export const EXECUTABLES = { chromium: '/usr/bin/chromium', firefox: '/usr/bin/firefox-esr' };

export async function launch(name, nodeDir) {
  const require = createRequire(path.join(nodeDir, 'package.json'));
  if (name === 'chromium') {
    const { chromium } = require('playwright-core');
    return chromium.launch({ executablePath: EXECUTABLES.chromium, args: ['--no-sandbox'] });
  }
  if (name === 'firefox') {
    const puppeteer = require('puppeteer-core');
    const browser = await puppeteer.launch({
      browser: 'firefox', executablePath: EXECUTABLES.firefox, headless: true,
      protocolTimeout: 120000,
    });
    return new FirefoxBrowser(browser);
  }
  throw new Error(`unknown browser ${name} (chromium or firefox)`);
}

class FirefoxBrowser {
  constructor(browser) { this.browser = browser; }
  async version() { return this.browser.version(); }
  async newContext({ viewport }) {
    return new FirefoxContext(await this.browser.createBrowserContext(), viewport);
  }
  async close() { await this.browser.close(); }
}

class FirefoxContext {
  constructor(context, viewport) { this.context = context; this.viewport = viewport; }
  async newPage() {
    const page = await this.context.newPage();
    if (this.viewport) await page.setViewport(this.viewport);
    return new FirefoxPage(page);
  }
  async close() { await this.context.close(); }
}

// Visibility the way Playwright defines it; `checkVisibility` also sees the content of a closed
// <details>, which Firefox still gives a (zero-size) client rect.
function visible(e) {
  return e.checkVisibility({ visibilityProperty: true }) && e.getClientRects().length > 0;
}

class FirefoxPage {
  constructor(page) {
    this.page = page;
    this.requests = new WeakMap();  // puppeteer request → the Playwright-shaped one, when ready
    this.handlers = { request: [], response: [] };
    page.on('request', (r) => {
      // The body comes over BiDi asynchronously; the wrapper is handed out once it is known.
      const ready = (r.hasPostData() ? r.fetchPostData() : Promise.resolve(undefined))
        .catch(() => undefined)
        .then((body) => {
          const wrapped = { url: () => r.url(), postData: () => body ?? null, headers: () => r.headers() };
          for (const h of this.handlers.request) h(wrapped);
          return wrapped;
        });
      this.requests.set(r, ready);
    });
    page.on('response', async (r) => {
      const ready = this.requests.get(r.request());
      const request = ready ? await ready : null;
      const wrapped = { status: () => r.status(), text: () => r.text(), request: () => request };
      for (const h of this.handlers.response) h(wrapped);
    });
  }

  on(event, handler) {
    if (event === 'request' || event === 'response') this.handlers[event].push(handler);
    else if (event === 'console') this.page.on('console', handler);
    else if (event === 'pageerror') this.page.on('pageerror', handler);
    else throw new Error(`FirefoxPage.on: ${event} is not wired`);
  }

  async goto(url) { await this.page.goto(url); }
  async waitForFunction(fn, arg, { timeout = 30000, polling = 100 } = {}) {
    return this.page.waitForFunction(fn, { timeout, polling }, arg);
  }
  async evaluate(fn, arg) { return this.page.evaluate(fn, arg); }
  async screenshot({ path: file, fullPage = false }) {
    await this.page.screenshot({ path: file, fullPage });
  }

  async inputValue(sel) { return this.page.$eval(sel, (e) => e.value); }
  async textContent(sel) { return this.page.$eval(sel, (e) => e.textContent); }
  async isVisible(sel) { return this.page.$eval(sel, visible); }
  async isDisabled(sel) { return this.page.$eval(sel, (e) => e.disabled); }
  async selectOption(sel, value) { await this.page.select(sel, value); }
  async fill(sel, value) { await this.page.locator(sel).fill(value); }
  async press(sel, key) {
    await this.page.focus(sel);
    await this.page.keyboard.press(key);
  }
  async click(sel) { await this.page.locator(sel).click(); }
  locator(sel) { return new FirefoxLocator(this.page, [{ sel, last: false }]); }
}

// A lazily resolved chain of selectors, each step taking the first match (or the last, after
// `.last()`) inside the previous one.
class FirefoxLocator {
  constructor(page, steps) { this.page = page; this.steps = steps; }
  locator(sel) { return new FirefoxLocator(this.page, [...this.steps, { sel, last: false }]); }
  last() {
    const steps = this.steps.slice();
    steps[steps.length - 1] = { ...steps[steps.length - 1], last: true };
    return new FirefoxLocator(this.page, steps);
  }

  async handle() {
    const h = await this.page.evaluateHandle((steps) => {
      let node = document;
      for (const { sel, last } of steps) {
        const all = node.querySelectorAll(sel);
        node = all.length ? all[last ? all.length - 1 : 0] : null;
        if (!node) return null;
      }
      return node;
    }, this.steps);
    const el = h.asElement();
    if (!el) throw new Error(`no element for ${JSON.stringify(this.steps)}`);
    return el;
  }
  async count() {
    const parent = new FirefoxLocator(this.page, this.steps.slice(0, -1));
    const { sel } = this.steps[this.steps.length - 1];
    if (parent.steps.length === 0) return (await this.page.$$(sel)).length;
    return (await parent.handle()).evaluate((e, s) => e.querySelectorAll(s).length, sel);
  }
  async evaluate(fn, arg) { return (await this.handle()).evaluate(fn, arg); }
  async textContent() { return this.evaluate((e) => e.textContent); }
  async getAttribute(name) { return this.evaluate((e, n) => e.getAttribute(n), name); }
  async isVisible() { return this.evaluate(visible); }
  async click() { await (await this.handle()).click(); }
  // Playwright's dispatchEvent: a DOM event of that type, bubbling like one the browser fires.
  async dispatchEvent(type) {
    await this.evaluate((e, t) => e.dispatchEvent(new Event(t, { bubbles: true })), type);
  }
  // No touch emulation over BiDi: the tap is a real (mouse) click on the element.
  async tap() { await this.click(); }
}
