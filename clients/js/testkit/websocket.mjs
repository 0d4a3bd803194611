// A small WebSocket client (RFC 6455, ws:// only) for Node versions without a global
// WebSocket (18; 20 and 21 without --experimental-websocket). Tests pass it to OctateClient
// through `options.WebSocket`, as an application on such a Node would pass the `ws` package.

import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** The browser WebSocket's interface, as far as OctateClient and the tests use it. */
export class MiniWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  /** @param {string} url */
  constructor(url) {
    const u = new URL(url);
    if (u.protocol !== 'ws:') throw new SyntaxError(`MiniWebSocket: only ws:// URLs, not ${url}`);
    this.url = url;
    this.readyState = 0;
    /** @type {((ev: any) => void) | null} */ this.onopen = null;
    /** @type {((ev: any) => void) | null} */ this.onmessage = null;
    /** @type {((ev: any) => void) | null} */ this.onclose = null;
    /** @type {((ev: any) => void) | null} */ this.onerror = null;
    this._buf = Buffer.alloc(0);
    this._handshaken = false;
    /** @type {Buffer[]} */ this._fragments = [];
    this._closeCode = 1006;
    this._closeReason = '';
    this._closedFired = false;
    const key = randomBytes(16).toString('base64');
    this._accept = createHash('sha1').update(key + GUID).digest('base64');
    const sock = net.connect(Number(u.port || 80), u.hostname);
    this._sock = sock;
    sock.on('connect', () => {
      sock.write(
        `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    sock.on('data', (d) => this._onData(d));
    sock.on('error', () => this.onerror?.({ type: 'error' }));
    sock.on('close', () => this._fireClose());
  }

  /** @param {string} text */
  send(text) {
    if (this.readyState !== 1) throw new Error('MiniWebSocket: not open');
    this._frame(1, Buffer.from(text, 'utf8'));
  }

  /** @param {number} [code] @param {string} [reason] */
  close(code, reason = '') {
    if (this.readyState >= 2) return;
    if (this.readyState === 0) {
      this.readyState = 2;
      this._sock.destroy();
      return;
    }
    this.readyState = 2;
    const payload = code === undefined ? Buffer.alloc(0) : Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);
    this._frame(8, payload);
    setTimeout(() => this._sock.destroy(), 1000).unref();
  }

  /** @param {number} opcode @param {Buffer} payload */
  _frame(opcode, payload) {
    const mask = randomBytes(4);
    const len = payload.length;
    const head = len < 126 ? Buffer.from([0x80 | opcode, 0x80 | len]) : len < 65536 ? Buffer.from([0x80 | opcode, 0x80 | 126, len >> 8, len & 0xff]) : null;
    let header = head;
    if (!header) {
      header = Buffer.alloc(10);
      header[0] = 0x80 | opcode;
      header[1] = 0x80 | 127;
      header.writeBigUInt64BE(BigInt(len), 2);
    }
    const masked = Buffer.alloc(len);
    for (let i = 0; i < len; i++) masked[i] = payload[i] ^ mask[i & 3];
    this._sock.write(Buffer.concat([header, mask, masked]));
  }

  /** @param {Buffer} d */
  _onData(d) {
    this._buf = Buffer.concat([this._buf, d]);
    if (!this._handshaken) {
      const end = this._buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this._buf.subarray(0, end).toString('latin1');
      this._buf = this._buf.subarray(end + 4);
      const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head)?.[1];
      if (!/^HTTP\/1\.1 101 /.test(head) || accept !== this._accept) {
        this.onerror?.({ type: 'error' });
        this._sock.destroy();
        return;
      }
      this._handshaken = true;
      this.readyState = 1;
      this.onopen?.({ type: 'open' });
    }
    for (;;) {
      if (this._buf.length < 2) return;
      const fin = (this._buf[0] & 0x80) !== 0;
      const opcode = this._buf[0] & 0x0f;
      let len = this._buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this._buf.length < 4) return;
        len = this._buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this._buf.length < 10) return;
        len = Number(this._buf.readBigUInt64BE(2));
        off = 10;
      }
      if (this._buf.length < off + len) return;
      const payload = this._buf.subarray(off, off + len);
      this._buf = this._buf.subarray(off + len);
      this._onFrame(fin, opcode, Buffer.from(payload));
    }
  }

  /** @param {boolean} fin @param {number} opcode @param {Buffer} payload */
  _onFrame(fin, opcode, payload) {
    if (opcode === 9) return this.readyState === 1 && this._frame(10, payload);
    if (opcode === 10) return;
    if (opcode === 8) {
      this._closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      this._closeReason = payload.subarray(2).toString('utf8');
      if (this.readyState === 1) {
        this.readyState = 2;
        this._frame(8, payload.subarray(0, 2));
      }
      this._sock.end();
      return;
    }
    this._fragments.push(payload);
    if (!fin) return;
    const data = Buffer.concat(this._fragments);
    this._fragments = [];
    if (this.readyState === 1) this.onmessage?.({ data: data.toString('utf8') });
  }

  _fireClose() {
    if (this._closedFired) return;
    this._closedFired = true;
    this.readyState = 3;
    this.onclose?.({ code: this._closeCode, reason: this._closeReason, wasClean: this._closeCode !== 1006 });
  }
}
