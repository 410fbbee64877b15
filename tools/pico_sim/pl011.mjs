// A PL011 UART (the RP2040's UART0/UART1) for rp2040js, replacing its stub: 32-byte
// transmit and receive FIFOs, the flag register, the RX/RX-timeout/TX interrupts with
// their FIFO levels, and a line that carries characters at the programmed baud rate and
// frame format (start + data + parity + stop bits) in simulated time. Parity is not
// carried (a pty has none). Bytes for the device go in with `receive(bytes)`; bytes the
// device sent leave through `onWire(byte, nanos)`, once their last stop bit is out.

const DR = 0x00, RSR = 0x04, FR = 0x18, IBRD = 0x24, FBRD = 0x28, LCR_H = 0x2c,
  CR = 0x30, IFLS = 0x34, IMSC = 0x38, RIS = 0x3c, MIS = 0x40, ICR = 0x44, DMACR = 0x48;
// FR bits
const BUSY = 1 << 3, RXFE = 1 << 4, TXFF = 1 << 5, RXFF = 1 << 6, TXFE = 1 << 7;
// interrupt bits: receive, transmit, receive timeout, overrun
const RXI = 1 << 4, TXI = 1 << 5, RTI = 1 << 6, OEI = 1 << 10;
const DEPTH = 32;
const LEVELS = [4, 8, 16, 24, 28];   // IFLS 1/8 .. 7/8 of 32

/** The class, on rp2040js's BasePeripheral (the package is found at run time). */
export function definePL011(BasePeripheral) {
  return class PL011 extends BasePeripheral {
    constructor(rp2040, name, irq, clock) {
      super(rp2040, name);
      this.irq = irq;
      this.clock = clock;
      this.cr = 0x300;        // TXE | RXE, UART disabled (reset value)
      this.lcr = 0;
      this.ifls = 0x12;       // reset value: both at 1/2
      this.imsc = 0;
      this.ris = 0;
      this.rsr = 0;
      this.ibrd = 0;
      this.fbrd = 0;
      this.tx = [];           // transmit FIFO
      this.rx = [];           // receive FIFO
      this.shifting = false;  // a character is on the wire
      this.pending = [];      // bytes from the host not yet on the wire to us
      this.receiving = false;
      this.lastRx = 0;        // simulated time the last received character ended
      this.txAlarm = clock.createAlarm(() => this.txDone());
      this.rxAlarm = clock.createAlarm(() => this.rxDone());
      this.rtAlarm = clock.createAlarm(() => this.rxTimeout());
      this.onWire = null;     // (byte, nanos) when a character's stop bit is out
      this.onTxStart = null;  // (nanos) when a character starts on the wire
      this.onRxEnd = null;    // (nanos) when the last received character of a burst ended
    }

    get enabled() { return (this.cr & 1) !== 0; }
    get fifos() { return (this.lcr & (1 << 4)) !== 0; }
    get depth() { return this.fifos ? DEPTH : 1; }

    get baud() {
      const div = this.ibrd + this.fbrd / 64;
      return div ? this.rp2040.clkPeri / (16 * div) : 0;
    }

    /** Nanoseconds of one character in the programmed frame format. */
    get charNanos() {
      const data = 5 + ((this.lcr >> 5) & 3);
      const parity = (this.lcr & 2) ? 1 : 0;
      const stop = (this.lcr & 8) ? 2 : 1;
      const baud = this.baud || 9600;
      return (1 + data + parity + stop) * 1e9 / baud;
    }

    get flags() {
      return (this.rx.length === 0 ? RXFE : 0) | (this.rx.length >= this.depth ? RXFF : 0) |
        (this.tx.length === 0 ? TXFE : 0) | (this.tx.length >= this.depth ? TXFF : 0) |
        (this.shifting || this.tx.length ? BUSY : 0);
    }

    update() {
      this.rp2040.setInterrupt(this.irq, (this.ris & this.imsc) !== 0);
    }

    // -- transmit ------------------------------------------------------------------------
    txLevel() { return this.fifos ? LEVELS[this.ifls & 7] || 16 : 0; }

    startTx() {
      if (this.shifting || !this.tx.length || !this.enabled || !(this.cr & 0x100)) return;
      const before = this.tx.length;
      this.shiftByte = this.tx.shift();
      this.shifting = true;
      if (this.onTxStart) this.onTxStart(this.clock.nanos);
      // the TX interrupt fires as the FIFO drains to its level (the RP2040 fires it on the
      // transition, not while the FIFO merely stays below the level)
      const level = this.txLevel();
      if (before > level && this.tx.length <= level) {
        this.ris |= TXI;
        this.update();
      }
      this.txAlarm.schedule(this.charNanos);
    }

    txDone() {
      this.shifting = false;
      if (this.onWire) this.onWire(this.shiftByte, this.clock.nanos);
      this.startTx();
    }

    writeDR(value) {
      if (this.tx.length < this.depth) {
        this.tx.push(value & 0xff);
        if (this.tx.length > this.txLevel() && (this.ris & TXI)) {
          this.ris &= ~TXI;   // filled above the level again
          this.update();
        }
      }
      this.startTx();
    }

    // -- receive -------------------------------------------------------------------------
    /** Bytes from the host: they arrive one character time apart, while the UART is on. */
    receive(bytes) {
      if (!this.enabled || !(this.cr & 0x200)) return;   // nobody listens: lost, as on a wire
      for (const b of bytes) this.pending.push(b);
      if (!this.receiving) {
        this.receiving = true;
        this.rxAlarm.schedule(this.charNanos);
      }
    }

    rxDone() {
      const b = this.pending.shift();
      this.lastRx = this.clock.nanos;
      if (this.rx.length < this.depth) {
        this.rx.push(b);
      } else {
        this.rsr |= 8;        // overrun: the byte is lost
        this.ris |= OEI;
      }
      const level = this.fifos ? LEVELS[(this.ifls >> 3) & 7] || 16 : 1;
      if (this.rx.length >= level) this.ris |= RXI;
      // receive timeout: 32 bit periods without a character while data waits
      this.rtAlarm.cancel();
      this.rtAlarm.schedule(32 * 1e9 / (this.baud || 9600));
      this.update();
      if (this.pending.length) {
        this.rxAlarm.schedule(this.charNanos);
      } else {
        this.receiving = false;
        if (this.onRxEnd) this.onRxEnd(this.clock.nanos);
      }
    }

    rxTimeout() {
      if (this.rx.length) {
        this.ris |= RTI;
        this.update();
      }
    }

    readDR() {
      const value = this.rx.length ? this.rx.shift() : 0;
      const level = this.fifos ? LEVELS[(this.ifls >> 3) & 7] || 16 : 1;
      if (this.rx.length < level) this.ris &= ~RXI;
      if (!this.rx.length) this.ris &= ~RTI;
      this.update();
      return value;
    }

    // -- registers -----------------------------------------------------------------------
    readUint32(offset) {
      switch (offset) {
        case DR: return this.readDR();
        case RSR: return this.rsr;
        case FR: return this.flags;
        case IBRD: return this.ibrd;
        case FBRD: return this.fbrd;
        case LCR_H: return this.lcr;
        case CR: return this.cr;
        case IFLS: return this.ifls;
        case IMSC: return this.imsc;
        case RIS: return this.ris;
        case MIS: return this.ris & this.imsc;
        case DMACR: return 0;
      }
      return super.readUint32(offset);
    }

    writeUint32(offset, value) {
      switch (offset) {
        case DR: this.writeDR(value); return;
        case RSR: this.rsr = 0; return;
        case IBRD: this.ibrd = value & 0xffff; this.reportBaud(); return;
        case FBRD: this.fbrd = value & 0x3f; this.reportBaud(); return;
        case LCR_H:
          if ((this.lcr ^ value) & (1 << 4)) {   // FIFOs switched: both flushed
            this.tx.length = 0;
            this.rx.length = 0;
          }
          this.lcr = value & 0xff;
          return;
        case CR: this.cr = value & 0xff87; this.startTx(); return;
        case IFLS: this.ifls = value & 0x3f; return;
        case IMSC: this.imsc = value & 0x7ff; this.update(); return;
        case ICR: this.ris &= ~(this.rawWriteValue & 0x7ff); this.update(); return;
        case DMACR: return;
      }
      super.writeUint32(offset, value);
    }

    reportBaud() {
      if (this.onBaudRateChange && this.baud) this.onBaudRateChange(Math.round(this.baud));
    }
  };
}
