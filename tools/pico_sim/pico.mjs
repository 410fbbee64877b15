// The emulated Raspberry Pi Pico (rp2040js running the MicroPython RPI_PICO image).
// tools/pico-sim makes the two ptys and runs this with their master sides:
//   node pico.mjs --modules DIR --firmware BIN --bootrom BIN [--flash FILE] [--fresh]
//                 --repl-fd N --uart-fd M [--uart-packets] [--trace-uart]
// On top of rp2040js: the flash erase/program ROM routines (flash.mjs), a PL011 UART0
// (pl011.mjs), resets (machine.reset(), the watchdog: the chip is rebuilt, the flash
// kept) and the chip-reset register that tells them apart. Simulated time never runs
// ahead of the wall clock (an idle chip waits for it), so timeouts on the device mean
// what they say; a busy chip runs slower than a real one (0.1x-0.4x with the host's load;
// MicroPython polls its UART while it waits, so the serving firmware is seldom idle).
// PICO_SIM_DEBUG=1 prints, every second, simulated vs wall time and the chip's state.
// Lines on stdout, for tools/pico-sim: "pico-sim: usb connected", "pico-sim: reset ...",
// "board: <line>" for the firmware's log lines (those starting "mbus: ") seen on the USB
// REPL, and with --trace-uart "uart: reply-start <ns> baud <rate> after-rx <ns>" (when the
// first character after a request starts on the wire, in simulated time since the first
// start, and how long after the end of the request's last character) and "uart: baud N".
import fs from 'node:fs';
import path from 'node:path';
import tty from 'node:tty';
import url from 'node:url';
import { definePL011 } from './pl011.mjs';
import { FLASH_BYTES, XIP_BASE, hookFlashRoutines, loadFlash, saveFlash } from './flash.mjs';

const IRQ_UART0 = 20;
const CHIP_RESET = 0x08, HAD_POR = 1 << 8;
const SAVE_AFTER_MS = 200;

function parseArgs(argv) {
  const a = { fresh: false, traceUart: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--fresh') a.fresh = true;
    else if (k === '--uart-packets') a.uartPackets = true;
    else if (k === '--trace-uart') a.traceUart = true;
    else a[k.replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase())] = argv[++i];
  }
  return a;
}

const args = parseArgs(process.argv.slice(2));
const rp = await import(url.pathToFileURL(path.join(args.modules, 'rp2040js/dist/esm/index.js')));
const PL011 = definePL011(rp.BasePeripheral);
const firmware = fs.readFileSync(args.firmware);
const romBytes = fs.readFileSync(args.bootrom);
const bootrom = new Uint32Array(romBytes.buffer, romBytes.byteOffset, 4096);

// rp2040js warns (on stderr) about the inter-core FIFO's registers on every start: only
// core 0 is emulated, and MicroPython's probe of core 1 is expected to find nothing
const warn = console.warn;
console.warn = (...m) => {
  if (!/invalid SIO address: (50|58)\b/.test(String(m[0]))) warn(...m);
};

function say(line) {
  process.stdout.write(line + '\n');
}

// -- the host side: the two ptys ---------------------------------------------------------
const replIn = new tty.ReadStream(Number(args.replFd));
const replOut = new tty.WriteStream(Number(args.replFd));
const uartIn = new tty.ReadStream(Number(args.uartFd));
const uartOut = new tty.WriteStream(Number(args.uartFd));
let replQueue = [];      // bytes from the REPL's user, for the USB host to send
let uartQueue = [];      // chunks from the M-Bus master, for UART0's receive line
let uartBytes = [];      // bytes UART0 put on the wire, for the master
let logLine = '';

replIn.on('data', (d) => {
  if (board.connected) {   // as with a real board: nothing to write to before it enumerates
    for (const b of d) replQueue.push(b);
    wake();
  }
});
uartIn.on('data', (d) => {
  if (args.uartPackets) {   // packet mode: a 0 byte before data, else a status
    if (d[0] !== 0) {
      if (d[0] & 64) say('pico-sim: uart settings');   // TIOCPKT_IOCTL: tools/pico-sim re-parks
      return;
    }
    d = d.subarray(1);
  }
  uartQueue.push(d);
  wake();
});

function snoop(buf) {
  for (const b of buf) {
    if (b === 10) {
      const line = logLine.replace(/\r$/, '');
      if (line.startsWith('mbus: ')) say('board: ' + line);
      logLine = '';
    } else if (logLine.length < 400) {
      logLine += String.fromCharCode(b);
    }
  }
}

// -- the chip ------------------------------------------------------------------------------
let board = null;        // { mcu, uart, cdc, connected }
let simBase = 0;         // simulated nanoseconds before the current chip's clock
let resetPending = 0;    // the watchdog's reason register when a reset was asked for
let saveTimer = null;

function simNanos() {
  return simBase + board.mcu.clock.nanos;
}

const wall0 = performance.now();
function wallNanos() {
  return (performance.now() - wall0) * 1e6;
}

/** The chip-reset register (VREG_AND_CHIP_RESET): power-on once, then a watchdog's. */
function chipResetRegs(BasePeripheral, mcu, poweredOn) {
  const p = new BasePeripheral(mcu, 'VREG_AND_CHIP_RESET');
  const regs = [0xb1, 0x91, poweredOn ? HAD_POR : 0];
  p.readUint32 = (offset) => regs[offset >> 2] ?? 0;
  p.writeUint32 = (offset, value) => {
    if (offset < CHIP_RESET) regs[offset >> 2] = value;
  };
  return p;
}

function flashChanged() {
  if (!args.flash || saveTimer) return;
  saveTimer = setTimeout(() => {
    saveTimer = null;
    saveFlash(board.mcu.flash, args.flash);
  }, SAVE_AFTER_MS);
}

function build(flash, watchdogState) {
  const mcu = new rp.RP2040();
  mcu.logger = new rp.ConsoleLogger(rp.LogLevel.Error);
  mcu.loadBootrom(bootrom);      // (resets the chip, which blanks the flash array)
  if (flash) mcu.flash.set(flash);
  else loadFlash(mcu, firmware, args.flash, args.fresh);
  hookFlashRoutines(mcu, flashChanged);
  const uart = new PL011(mcu, 'UART0', IRQ_UART0, mcu.clock);
  mcu.peripherals[0x40034] = uart;
  mcu.peripherals[0x40064] = chipResetRegs(rp.BasePeripheral, mcu, !watchdogState);
  const wd = mcu.peripherals[0x40058];
  if (watchdogState) {           // the reason and scratch registers survive its reset
    wd.reason = watchdogState.reason;
    wd.scratchData.set(watchdogState.scratch);
  }
  wd.onWatchdogTrigger = () => {
    resetPending = wd.reason || 2;
    // stop its timer: rp2040js re-arms a timed-out watchdog's alarm 0 ns ahead, forever
    wd.alarm.enable = false;
    wd.timer.enable = false;
  };
  const b = { mcu, uart, cdc: new rp.USBCDC(mcu.usbCtrl), connected: false };
  b.cdc.onDeviceConnected = () => {
    b.connected = true;
    say('pico-sim: usb connected');
  };
  b.cdc.onSerialData = (buf) => {
    replOut.write(Buffer.from(buf));
    snoop(buf);
  };
  uart.onWire = (byte) => uartBytes.push(byte);
  if (args.traceUart) {
    let rxEnd = -1;
    uart.onRxEnd = (ns) => { rxEnd = ns; };
    uart.onTxStart = (ns) => {
      if (rxEnd >= 0) say('uart: reply-start ' + Math.round(simBase + ns) + ' baud ' +
                          Math.round(uart.baud) + ' after-rx ' + Math.round(ns - rxEnd));
      rxEnd = -1;
    };
    uart.onBaudRateChange = (baud) => say('uart: baud ' + baud);
  }
  if (process.env.PICO_SIM_DEBUG) {
    const entry = mcu.core.exceptionEntry.bind(mcu.core);
    mcu.core.exceptionEntry = (n) => {
      stats.exceptions[n] = (stats.exceptions[n] || 0) + 1;
      entry(n);
    };
  }
  mcu.core.PC = XIP_BASE;        // boot2 at the start of the flash, then the firmware
  return b;
}

function doReset() {
  const old = board.mcu;
  const wd = old.peripherals[0x40058];
  const state = { reason: resetPending, scratch: wd.scratchData.slice() };
  const why = resetPending & 1 ? 'watchdog timeout' : 'machine.reset() / watchdog trigger';
  resetPending = 0;
  const flash = old.flash.slice(0, FLASH_BYTES);
  if (args.flash) saveFlash(flash, args.flash);
  simBase += old.clock.nanos;
  replQueue = [];
  uartQueue = [];
  say('pico-sim: reset (' + why + ') at ' + (simBase / 1e9).toFixed(3) + ' s');
  board = build(flash, state);
}

// -- running: instructions, then idle time up to the wall clock --------------------------
let timer = null;
let immediate = null;
const stats = { instructions: 0, idle: 0, exceptions: {} };

function wake() {
  if (timer) {
    clearTimeout(timer);
    timer = null;
  }
  if (!immediate) immediate = setImmediate(run);
}

function deliverInput() {
  const { cdc, uart } = board;
  while (replQueue.length && !cdc.txFIFO.full) cdc.sendSerialByte(replQueue.shift());
  if (replQueue.length > 4096) replQueue = replQueue.slice(-4096);
  for (const chunk of uartQueue) uart.receive(chunk);
  uartQueue = [];
}

function flushOutput() {
  if (uartBytes.length) {
    uartOut.write(Buffer.from(uartBytes));
    uartBytes = [];
  }
}

function run() {
  immediate = null;
  if (resetPending) doReset();
  const { mcu } = board;
  const { core, clock } = mcu;
  const until = performance.now() + 20;
  deliverInput();
  for (let i = 1; ; i++) {
    if (core.waiting) {
      const next = clock.nextAlarm ? clock.nanosToNextAlarm : Infinity;
      const ahead = simNanos() + next - wallNanos();
      if (ahead > 0) {
        // nothing due before the wall clock gets there: input first, else sleep
        if (uartQueue.length || (replQueue.length && !board.cdc.txFIFO.full)) {
          clock.tick(Math.max(0, Math.min(next - 1, wallNanos() - simNanos())));
          deliverInput();
          continue;
        }
        timer = setTimeout(run, Math.min(Math.max(ahead / 1e6, 1), 50));
        break;
      }
      clock.tick(next);
      stats.idle++;
    } else {
      stats.instructions++;
      clock.tick(core.executeInstruction() * 8);    // 125 MHz: 8 ns a cycle
    }
    if (resetPending) {
      wake();
      break;
    }
    if ((i & 0x3ff) === 0 && performance.now() > until) {
      wake();
      break;
    }
  }
  flushOutput();
}

function stop() {
  if (saveTimer) clearTimeout(saveTimer);
  if (args.flash) saveFlash(board.mcu.flash, args.flash);
  process.exit(0);
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// PICO_SIM_DEBUG=1: every second, how simulated time keeps up with the wall clock, what the
// chip does, its watchdog and the USB host's queue
function debugLine() {
  const wd = board.mcu.peripherals[0x40058];
  return 'debug: sim ' + (simNanos() / 1e9).toFixed(3) + ' s, wall ' +
    (wallNanos() / 1e9).toFixed(3) + ' s, waiting ' + board.mcu.core.waiting +
    ', instructions ' + stats.instructions + ', idle ticks ' + stats.idle +
    ', exceptions ' + JSON.stringify(stats.exceptions) +
    ', watchdog ' + [wd.enable, wd.timer.enable, wd.timer.counter].join('/') +
    ', usb ' + [replQueue.length, board.cdc.txFIFO.itemCount, board.connected].join('/');
}

if (process.env.PICO_SIM_DEBUG) setInterval(() => say(debugLine()), 1000);
board = build(null, null);
if (args.flash && args.fresh) saveFlash(board.mcu.flash, args.flash);
say('pico-sim: started, simulated time 0');
run();
