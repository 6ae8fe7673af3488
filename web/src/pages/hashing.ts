// SHA-256 and MD5, fed a chunk at a time: an upload hashes a model of several GB (the whole
// file's SHA-256 for the registration, each part's MD5 for its Content-MD5) without holding it
// in memory. WebCrypto cannot: its digest takes the whole input at once, and it exists only in
// secure contexts (a stack opened by a LAN address over http is not one).

const SHA_K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const MD5_S = new Uint8Array([7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21]);
const MD5_T = Int32Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32));

/** The 64-byte block buffering both hashes share; `compress` is each one's round function. */
abstract class BlockHash {
  private block = new Uint8Array(64);
  private used = 0;
  private length = 0;

  protected abstract compress(data: Uint8Array, offset: number): void;
  protected abstract bigEndian: boolean;
  protected abstract state(): Uint8Array;

  update(data: Uint8Array): this {
    this.length += data.length;
    let i = 0;
    if (this.used > 0) {
      i = Math.min(64 - this.used, data.length);
      this.block.set(data.subarray(0, i), this.used);
      this.used += i;
      if (this.used < 64) return this;
      this.compress(this.block, 0);
      this.used = 0;
    }
    for (; i + 64 <= data.length; i += 64) this.compress(data, i);
    if (i < data.length) {
      this.block.set(data.subarray(i), 0);
      this.used = data.length - i;
    }
    return this;
  }

  digest(): Uint8Array {
    const bits = this.length * 8;
    const pad = new Uint8Array((this.used < 56 ? 64 : 128) - this.used);
    pad[0] = 0x80;
    const view = new DataView(pad.buffer);
    const high = Math.floor(bits / 2 ** 32);
    const low = bits >>> 0;
    if (this.bigEndian) {
      view.setUint32(pad.length - 8, high);
      view.setUint32(pad.length - 4, low);
    } else {
      view.setUint32(pad.length - 8, low, true);
      view.setUint32(pad.length - 4, high, true);
    }
    this.update(pad);
    return this.state();
  }
}

export class Sha256 extends BlockHash {
  protected bigEndian = true;
  private h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  private w = new Int32Array(64);

  protected compress(d: Uint8Array, o: number): void {
    const w = this.w;
    for (let i = 0; i < 16; i++) w[i] = (d[o + 4 * i] << 24) | (d[o + 4 * i + 1] << 16) | (d[o + 4 * i + 2] << 8) | d[o + 4 * i + 3];
    for (let i = 16; i < 64; i++) {
      const a = w[i - 15], b = w[i - 2];
      const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
      const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    const h = this.h;
    let a = h[0] | 0, b = h[1] | 0, c = h[2] | 0, dd = h[3] | 0, e = h[4] | 0, f = h[5] | 0, g = h[6] | 0, hh = h[7] | 0;
    for (let i = 0; i < 64; i++) {
      const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (hh + s1 + ((e & f) ^ (~e & g)) + SHA_K[i] + w[i]) | 0;
      const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      hh = g; g = f; f = e; e = (dd + t1) | 0;
      dd = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += dd; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }

  protected state(): Uint8Array {
    const out = new Uint8Array(32);
    const view = new DataView(out.buffer);
    this.h.forEach((x, i) => view.setUint32(4 * i, x));
    return out;
  }
}

export class Md5 extends BlockHash {
  protected bigEndian = false;
  private h = new Uint32Array([0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476]);
  private m = new Int32Array(16);

  protected compress(d: Uint8Array, o: number): void {
    const m = this.m;
    for (let i = 0; i < 16; i++) m[i] = d[o + 4 * i] | (d[o + 4 * i + 1] << 8) | (d[o + 4 * i + 2] << 16) | (d[o + 4 * i + 3] << 24);
    const h = this.h;
    let a = h[0] | 0, b = h[1] | 0, c = h[2] | 0, dd = h[3] | 0;
    for (let i = 0; i < 64; i++) {
      let f: number, g: number;
      if (i < 16) { f = (b & c) | (~b & dd); g = i; }
      else if (i < 32) { f = (dd & b) | (~dd & c); g = (5 * i + 1) & 15; }
      else if (i < 48) { f = b ^ c ^ dd; g = (3 * i + 5) & 15; }
      else { f = c ^ (b | ~dd); g = (7 * i) & 15; }
      const s = MD5_S[(i >> 4) * 4 + (i & 3)];
      const x = (a + f + MD5_T[i] + m[g]) | 0;
      a = dd; dd = c; c = b;
      b = (b + ((x << s) | (x >>> (32 - s)))) | 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += dd;
  }

  protected state(): Uint8Array {
    const out = new Uint8Array(16);
    const view = new DataView(out.buffer);
    this.h.forEach((x, i) => view.setUint32(4 * i, x, true));
    return out;
  }
}

export const hex = (bytes: Uint8Array): string => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
export const base64 = (bytes: Uint8Array): string => btoa(String.fromCharCode(...bytes));

const CHUNK = 4 * 1024 * 1024;

/** Feed `blob` to `hash` a chunk at a time (the page stays responsive), reporting bytes read. */
export async function hashBlob<T extends BlockHash>(hash: T, blob: Blob, onBytes?: (n: number) => void, signal?: AbortSignal): Promise<T> {
  for (let at = 0; at < blob.size; at += CHUNK) {
    signal?.throwIfAborted();
    const chunk = new Uint8Array(await blob.slice(at, at + CHUNK).arrayBuffer());
    hash.update(chunk);
    onBytes?.(chunk.length);
  }
  return hash;
}
