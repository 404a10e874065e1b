import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { type FSWatcher, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';
import { join } from 'node:path';
import { ConfigWatcher, Debounce } from '../../src/runtime/watcher.js';
import { eventually } from '../helpers/gateway.js';
import { tempDir } from '../helpers/reaper.js';

describe('the watcher debounce', () => {
  let fired: number[];
  let debounce: Debounce;
  beforeEach(() => {
    mock.timers.enable({ apis: ['setTimeout', 'setImmediate', 'Date'], now: 0 });
    fired = [];
    debounce = new Debounce(() => fired.push(Date.now()), { debounceMs: 100, maxWaitMs: 1000 });
  });
  afterEach(() => {
    debounce.cancel();
    mock.timers.reset();
  });

  /** Advances the mock clock a millisecond at a time, so a timer's callback sees its own time in Date.now(). */
  const advance = (ms: number) => {
    for (let i = 0; i < ms; i++) mock.timers.tick(1);
  };
  /** Pokes every `everyMs` from now until `untilMs` (absolute mock time), advancing the clock. */
  const pokeEvery = (everyMs: number, untilMs: number) => {
    for (let t = Date.now(); t <= untilMs; t += everyMs) {
      advance(t - Date.now());
      debounce.poke();
    }
  };

  it('fires once, debounceMs after the last of a burst of events', () => {
    debounce.poke();
    advance(30);
    debounce.poke();
    advance(30);
    debounce.poke();
    advance(99);
    assert.deepEqual(fired, []);
    advance(1);
    assert.deepEqual(fired, [160]);
    advance(5000);
    assert.deepEqual(fired, [160]);
  });

  it('fires once per burst when bursts are separated by quiet time', () => {
    debounce.poke();
    advance(500);
    debounce.poke();
    advance(500);
    assert.deepEqual(fired, [100, 600]);
  });

  it('never postpones firing more than maxWaitMs after the first event of a stream', () => {
    // An event every 50 ms for 3.5 s: without the ceiling it would fire only at the end.
    pokeEvery(50, 3500);
    advance(200);
    assert.deepEqual(fired.slice(0, 3), [1000, 2000, 3000]);
    assert.equal(fired.at(-1), 3600, 'and once more after the stream ends');
    for (let i = 1; i < fired.length; i++) assert.ok(fired[i]! - fired[i - 1]! <= 1100, `gap ${fired[i]! - fired[i - 1]!} ms`);
  });

  it('an edit every second means a reload every second, each one applied', () => {
    pokeEvery(1000, 4000);
    advance(1000);
    assert.deepEqual(fired, [100, 1100, 2100, 3100, 4100]);
  });

  describe('while a reload runs', () => {
    it('counts the max-wait of a poke handled late from when the reload began reading', () => {
      // The reload's compile held the event loop for 700 ms: the edits' events are handled only then.
      const ended = debounce.reloading();
      advance(700);
      pokeEvery(50, 900);
      ended(false);
      pokeEvery(50, 2500);
      advance(200);
      assert.equal(fired[0], 1000, 'the reload began reading at 0: an edit it did not cover is at most 1000 ms old by then');
      assert.equal(fired[1], 2000);
    });

    it("counts from the reload's start the events that waited behind it, handled just after it ended", () => {
      const ended = debounce.reloading();
      advance(700);
      ended(false);
      debounce.poke();
      pokeEvery(50, 2500);
      assert.deepEqual(fired.slice(0, 2), [1000, 2000]);
    });

    it('still waits debounceMs for the rest of a burst that starts during a reload', () => {
      const ended = debounce.reloading();
      advance(200);
      debounce.poke();
      advance(30);
      debounce.poke();
      ended(false);
      advance(99);
      assert.deepEqual(fired, []);
      advance(1);
      assert.deepEqual(fired, [330]);
    });

    it('fires at once for a poke handled after its max-wait is due, so the next reload follows the running one', () => {
      const ended = debounce.reloading();
      advance(1200);
      debounce.poke();
      mock.timers.tick(0);
      assert.deepEqual(fired, [1200]);
      ended(false);
    });

    it('after a rejected reload (a file read while being written), fires debounceMs after the next edit, once', () => {
      debounce.poke();
      advance(100);
      let ended = debounce.reloading();
      advance(20);
      ended(true);
      advance(10);
      pokeEvery(40, 210);
      advance(20);
      assert.deepEqual(fired, [100, 230], 'debounceMs after the poke at 130, not maxWaitMs');
      // Rejected again: the config is invalid, not half written; back to maxWaitMs.
      ended = debounce.reloading();
      advance(20);
      ended(true);
      advance(10);
      pokeEvery(40, 1400);
      assert.deepEqual(fired.slice(0, 3), [100, 230, 1260]);
    });

    it('counts a poke after the reload ended from itself', () => {
      const ended = debounce.reloading();
      advance(300);
      ended(false);
      advance(200);
      pokeEvery(50, 3000);
      assert.deepEqual(fired.slice(0, 2), [1500, 2500]);
    });
  });

  it('does not fire after cancel', () => {
    debounce.poke();
    debounce.cancel();
    advance(2000);
    assert.deepEqual(fired, []);
  });
});

describe('the config watcher', () => {
  // Node's fs.watch reports an error (inotify gave one up) on its FSWatcher; nothing a test can
  // cause on Linux, so the error is emitted on the real watch of a real directory.
  it('replaces its own directory watch after an error, and still reports an edit', async () => {
    const dir = tempDir('eventgate-watcher');
    const file = join(dir, 'gateway.yaml');
    writeFileSync(file, 'version: 1\n');
    const changes: string[][] = [];
    const watcher = new ConfigWatcher((files) => changes.push(files), { debounceMs: 20, maxWaitMs: 200 });
    try {
      watcher.setFiles([file]);
      await watcher.ready();
      // Past the check the watcher makes once ready (debounceMs 20), which would watch again by itself.
      await delay(200);
      const own = (watcher as unknown as { own: Map<string, FSWatcher> }).own;
      const real = realpathSync(dir);
      const broken = own.get(real)!;
      assert.ok(broken, 'a watch of its own on the directory');
      broken.emit('error', new Error('EIO: the watch was lost'));
      assert.equal(own.get(real), undefined, 'the failed watch is dropped');
      await eventually(() => assert.ok(own.get(real) && own.get(real) !== broken, 'watched again after the check'));
      assert.deepEqual(changes, [], 'the error alone is no change');
      writeFileSync(file, 'version: 1\nlisteners: {}\n');
      await eventually(() => assert.deepEqual(changes, [[file]]));
    } finally {
      await watcher.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
