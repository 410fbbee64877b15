// The Pico's 2 MiB QSPI flash for rp2040js: the firmware image at its start, the rest
// (MicroPython's filesystem) kept in a file between runs. rp2040js does not emulate
// programming the flash, so the two ROM routines that do it, flash_range_erase ('RE')
// and flash_range_program ('RP'), are replaced: their first instruction becomes a
// breakpoint, and the breakpoint handler does the work on the flash array and returns.
import fs from 'node:fs';

export const FLASH_BYTES = 2 * 1024 * 1024;
const XIP_BASE = 0x10000000;
const BKPT_ERASE = 0xe5, BKPT_PROGRAM = 0xe6;

function romCode(a, b) {
  return a.charCodeAt(0) | (b.charCodeAt(0) << 8);
}

/** The address of a ROM function from the bootrom's function table (a 16-bit pointer to
 * it at 0x14; entries of a 16-bit code and a 16-bit address, ending with code 0). */
function romFunction(mcu, code) {
  let entry = mcu.readUint16(0x14);
  for (;;) {
    const c = mcu.readUint16(entry);
    if (c === 0) throw new Error('ROM function ' + code.toString(16) + ' not in the table');
    if (c === code) return mcu.readUint16(entry + 2) & ~1;
    entry += 4;
  }
}

function patch16(mcu, addr, value) {
  const word = addr & ~3;
  const old = mcu.bootrom[word >> 2];
  mcu.bootrom[word >> 2] = (addr & 2) ? (old & 0xffff) | (value << 16) : (old & ~0xffff) | value;
}

/** Hook erase and program; onChange() after each (to save the file). */
export function hookFlashRoutines(mcu, onChange) {
  patch16(mcu, romFunction(mcu, romCode('R', 'E')), 0xbe00 | BKPT_ERASE);
  patch16(mcu, romFunction(mcu, romCode('R', 'P')), 0xbe00 | BKPT_PROGRAM);
  const core = mcu.core;
  mcu.onBreak = (code) => {
    const r = core.registers;
    if (code === BKPT_ERASE) {          // (offset, count, block size, block command)
      const start = r[0] & 0xffffff, end = Math.min(start + r[1], FLASH_BYTES);
      mcu.flash.fill(0xff, start, end);
    } else if (code === BKPT_PROGRAM) { // (offset, data pointer, count): NOR clears bits
      const start = r[0] & 0xffffff, n = Math.min(r[2], FLASH_BYTES - start);
      for (let i = 0; i < n; i++) mcu.flash[start + i] &= mcu.readUint8(r[1] + i);
    } else {
      throw new Error('breakpoint ' + code + ' at 0x' + (core.PC - 2).toString(16));
    }
    core.PC = r[14] & ~1;              // return (bx lr)
    onChange();
  };
}

/** Fill the flash: the saved image (unless fresh), then the firmware over its start. */
export function loadFlash(mcu, firmware, file, fresh) {
  mcu.flash.fill(0xff);
  if (file && !fresh && fs.existsSync(file)) {
    const saved = fs.readFileSync(file);
    mcu.flash.set(saved.subarray(0, FLASH_BYTES));
  }
  mcu.flash.set(firmware);
}

export function saveFlash(flash, file) {
  if (!file) return;
  const tmp = file + '.tmp' + process.pid;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, flash.subarray(0, FLASH_BYTES));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);   // atomic: the old image or the new one, never half
}

export { XIP_BASE };
