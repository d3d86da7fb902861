/**
 * Protobuf string fields that are not valid UTF-8 decode to strings that are not well formed.
 *
 * The protobuf runtime (shared by every generated decoder: API requests, peer answers,
 * datagrams) substitutes U+FFFD for invalid bytes by default, so the ids `c3 28`, `c4 28`
 * and `ff 28` all decoded to "\uFFFD(" — one session under three names, and the same as
 * the valid id `ef bf bd 28`. Installed on import, the decoder here keeps valid text as is
 * and marks invalid input with a leading lone surrogate, which valid UTF-8 never decodes
 * to; validation rejects such strings (`isWellFormedText`) with INVALID_ARGUMENT.
 */
import { configureTextEncoding } from '@bufbuild/protobuf/wire';

const lenient = new TextDecoder('utf-8', { ignoreBOM: true });
const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();
/** A lone low surrogate: no UTF-8 byte sequence decodes to it. */
const INVALID_MARK = '\udcff';

configureTextEncoding({
  encodeUtf8: (text) => encoder.encode(text),
  decodeUtf8: (bytes, throwOnInvalid) => {
    try {
      return strict.decode(bytes);
    } catch (err) {
      if (throwOnInvalid === true) throw err;
      return INVALID_MARK + lenient.decode(bytes);
    }
  },
  checkUtf8: (text) => isWellFormedText(text),
});

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether a string is valid Unicode text (no lone surrogates), i.e. came from valid UTF-8. */
export function isWellFormedText(text: string): boolean {
  return !LONE_SURROGATE.test(text);
}
