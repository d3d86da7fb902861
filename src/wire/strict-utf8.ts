/**
 * Protobuf string fields must hold valid UTF-8, and baton's decoders refuse those that do not.
 *
 * The protobuf runtime (shared by every generated decoder: API requests, peer answers,
 * datagrams) substituted U+FFFD for invalid bytes by default, so the session ids `c3 28`,
 * `c4 28` and `ff 28` all decoded to "\uFFFD(" — one session under three names, and the same
 * as the valid id `ef bf bd 28`. Installed on import, the decoder here throws a
 * `Utf8Error` instead, as proto3 asks of parsers; the API edge answers INVALID_ARGUMENT.
 */
import { configureTextEncoding } from '@bufbuild/protobuf/wire';

/** A string field of a message is not valid UTF-8. */
export class Utf8Error extends Error {
  constructor() {
    super('a string field is not valid UTF-8');
    this.name = 'Utf8Error';
  }
}

const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

configureTextEncoding({
  encodeUtf8: (text) => encoder.encode(text),
  decodeUtf8: (bytes) => {
    try {
      return strict.decode(bytes);
    } catch {
      throw new Utf8Error();
    }
  },
  // String.prototype.isWellFormed is in Node 20, not in the ES2022 typings.
  checkUtf8: (text) => (text as unknown as { isWellFormed(): boolean }).isWellFormed(),
});
