// ChaCha20-Poly1305 (the RFC 8439 AEAD) into and within the caller's buffers, for the secure
// channel's records (proto/src/channel/protocol.ts):
//
//   aeadSeal(key, nonce, aad, pieces[], out, offset) -> end
//       encrypts the concatenation of `pieces` into out[offset, end - 16) and writes the tag at
//       out[end - 16, end); end = offset + total + 16. out must not overlap the pieces or the aad.
//   aeadOpen(key, nonce, aad, parts[], tag, out | undefined) -> boolean
//       decrypts the concatenation of `parts` (the ciphertext) into `out` (exactly that long,
//       overlapping nothing else), or, without `out`, each part in place; then checks `tag`.
//       true: the bytes written are the authenticated plaintext. false: the tag did not verify,
//       and every byte written has been zeroed before returning — the caller must treat the
//       buffers as garbage (never use or pass on what they held). OpenSSL only learns whether the
//       tag matches after decrypting, so a plaintext that fails exists for that moment, in native
//       code, and never reaches JavaScript.
//
// Why not node:crypto: Cipher.update() always returns a new Buffer (allocated, and zero-filled)
// and cannot encrypt into a buffer of ours or decrypt where the bytes lie; at the channel's rate
// those buffers and the collections they set off were most of its cost (issue 12). The cipher is
// the same: node's own OpenSSL, whose symbols the node binary exports, so nothing else is linked
// (and the guests, which run the same node binary, get the same library).
//
// Every argument is checked (types, exact key/nonce/tag sizes, bounds, overlaps), every OpenSSL
// call's result too; lengths are size_t, and anything one EVP call cannot take whole (> INT_MAX)
// is refused rather than truncated. Failures throw a JavaScript error; the context is freed on
// every path (unique_ptr) and OpenSSL's per-thread error queue is left empty, so node:crypto
// never reports an error of ours.
#include <napi.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "built against OpenSSL headers older than node 20's OpenSSL 3"
#endif

namespace airlock {
namespace {

constexpr size_t kKeySize = 32;    // RFC 8439 2.8: a 256-bit key
constexpr size_t kNonceSize = 12;  // RFC 8439 2.8: a 96-bit nonce
constexpr size_t kTagSize = 16;    // RFC 8439 2.8: a 128-bit tag
// Bounds the pieces of one call: the channel passes a handful; this keeps a call's work (and
// the overlap check's sort) proportional to something small whatever a caller passes.
constexpr uint32_t kMaxPieces = 4096;

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

// Leaves OpenSSL's error queue (per thread, shared with node:crypto) as empty as we found it.
struct ClearErrorsOnReturn {
  ~ClearErrorsOnReturn() { ERR_clear_error(); }
};

struct Span {
  uint8_t* data = nullptr;
  size_t size = 0;
};

// A Uint8Array argument (a Buffer is one); false after throwing a TypeError.
bool BytesArg(const Napi::Value& v, const char* name, Span* out) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    Napi::TypeError::New(v.Env(), std::string(name) + " must be a Buffer or Uint8Array").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  out->data = a.Data();
  out->size = a.ByteLength();
  return true;
}

bool SizedArg(const Napi::CallbackInfo& info, size_t i, const char* name, size_t size, Span* out) {
  if (!BytesArg(info[i], name, out)) return false;
  if (out->size != size) {
    Napi::RangeError::New(info.Env(), std::string(name) + " must be exactly " + std::to_string(size) + " bytes").ThrowAsJavaScriptException();
    return false;
  }
  return true;
}

// One EVP update takes an int length.
bool FitsInt(Napi::Env env, const char* name, size_t size) {
  if (size <= static_cast<size_t>(INT_MAX)) return true;
  Napi::RangeError::New(env, std::string(name) + " is longer than one cipher call takes (INT_MAX bytes)").ThrowAsJavaScriptException();
  return false;
}

// An array of Uint8Arrays, each one EVP call long at most, and their total (no size_t overflow).
bool PiecesArg(const Napi::CallbackInfo& info, size_t i, const char* name, std::vector<Span>* out, size_t* total) {
  Napi::Env env = info.Env();
  if (!info[i].IsArray()) {
    Napi::TypeError::New(env, std::string(name) + " must be an array of Buffers").ThrowAsJavaScriptException();
    return false;
  }
  Napi::Array arr = info[i].As<Napi::Array>();
  uint32_t n = arr.Length();
  if (n > kMaxPieces) {
    Napi::RangeError::New(env, std::string(name) + ": more than " + std::to_string(kMaxPieces) + " pieces").ThrowAsJavaScriptException();
    return false;
  }
  out->clear();
  out->reserve(n);
  *total = 0;
  for (uint32_t k = 0; k < n; k++) {
    Napi::Value v = arr.Get(k);
    if (env.IsExceptionPending()) return false;
    Span s;
    if (!BytesArg(v, name, &s) || !FitsInt(env, name, s.size)) return false;
    if (s.size > SIZE_MAX - *total) {
      Napi::RangeError::New(env, std::string(name) + ": total length overflows").ThrowAsJavaScriptException();
      return false;
    }
    *total += s.size;
    if (s.size > 0) out->push_back(s);
  }
  return true;
}

bool Overlap(const Span& a, const Span& b) {
  if (a.size == 0 || b.size == 0) return false;
  uintptr_t a0 = reinterpret_cast<uintptr_t>(a.data), b0 = reinterpret_cast<uintptr_t>(b.data);
  return a0 < b0 + b.size && b0 < a0 + a.size;
}

// True if any two of `spans` share a byte (sorted by address: n log n, not n²).
bool AnyOverlap(std::vector<Span> spans) {
  spans.erase(std::remove_if(spans.begin(), spans.end(), [](const Span& s) { return s.size == 0; }), spans.end());
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.data < b.data; });
  for (size_t k = 1; k < spans.size(); k++) {
    if (Overlap(spans[k - 1], spans[k])) return true;
  }
  return false;
}

Napi::Value Throw(Napi::Env env, const std::string& what) {
  Napi::RangeError::New(env, what).ThrowAsJavaScriptException();
  return env.Undefined();
}

// An OpenSSL failure, with OpenSSL's reason when it gave one.
Napi::Value ThrowOpenSsl(Napi::Env env, const char* call) {
  std::string msg = std::string("aead: ") + call + " failed";
  unsigned long e = ERR_get_error();
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    msg += std::string(": ") + buf;
  }
  Napi::Error::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

// A context set up for one message under key and nonce, its AAD already absorbed.
Ctx Start(bool encrypt, const Span& key, const Span& nonce, const Span& aad, const char** failed) {
  Ctx ctx(EVP_CIPHER_CTX_new());
  *failed = "EVP_CIPHER_CTX_new";
  if (!ctx) return nullptr;
  *failed = "EVP_CipherInit_ex";
  if (EVP_CipherInit_ex(ctx.get(), EVP_chacha20_poly1305(), nullptr, nullptr, nullptr, encrypt ? 1 : 0) != 1) return nullptr;
  // OpenSSL's default, and RFC 8439's; checked rather than assumed.
  *failed = "EVP_CIPHER_CTX_get_iv_length";
  if (EVP_CIPHER_CTX_get_iv_length(ctx.get()) != static_cast<int>(kNonceSize)) return nullptr;
  *failed = "EVP_CipherInit_ex (key, nonce)";
  if (EVP_CipherInit_ex(ctx.get(), nullptr, nullptr, key.data, nonce.data, encrypt ? 1 : 0) != 1) return nullptr;
  if (aad.size > 0) {
    int n = 0;
    *failed = "EVP_CipherUpdate (aad)";
    if (EVP_CipherUpdate(ctx.get(), nullptr, &n, aad.data, static_cast<int>(aad.size)) != 1) return nullptr;
  }
  *failed = nullptr;
  return ctx;
}

// One update of a stream cipher: exactly as many bytes out as in.
bool Update(EVP_CIPHER_CTX* ctx, uint8_t* out, const Span& in) {
  int n = 0;
  return EVP_CipherUpdate(ctx, out, &n, in.data, static_cast<int>(in.size)) == 1 && n >= 0 && static_cast<size_t>(n) == in.size;
}

Napi::Value Seal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ClearErrorsOnReturn clear;
  if (info.Length() != 6) return Throw(env, "aeadSeal(key, nonce, aad, pieces, out, offset)");
  Span key, nonce, aad, out;
  std::vector<Span> pieces;
  size_t total = 0;
  if (!SizedArg(info, 0, "key", kKeySize, &key) || !SizedArg(info, 1, "nonce", kNonceSize, &nonce)) return env.Undefined();
  if (!BytesArg(info[2], "aad", &aad) || !FitsInt(env, "aad", aad.size)) return env.Undefined();
  if (!PiecesArg(info, 3, "pieces", &pieces, &total) || !BytesArg(info[4], "out", &out)) return env.Undefined();
  if (!info[5].IsNumber()) {
    Napi::TypeError::New(env, "offset must be a number").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  double off = info[5].As<Napi::Number>().DoubleValue();
  // An integer within out (NaN fails both comparisons); out's length is below 2^53, so exact.
  if (!(off >= 0) || !(off <= static_cast<double>(out.size)) || off != static_cast<double>(static_cast<size_t>(off))) return Throw(env, "offset out of range");
  size_t offset = static_cast<size_t>(off);
  // total + tag must fit after offset: compared without adding offset (no overflow).
  if (total > out.size - offset || kTagSize > out.size - offset - total) return Throw(env, "out has no room for the sealed record");
  Span region{out.data + offset, total + kTagSize};
  if (Overlap(region, aad)) return Throw(env, "out overlaps the aad");
  for (const Span& p : pieces) {
    if (Overlap(region, p)) return Throw(env, "out overlaps a piece of the plaintext");
  }

  const char* failed = nullptr;
  Ctx ctx = Start(true, key, nonce, aad, &failed);
  if (!ctx) return ThrowOpenSsl(env, failed);
  uint8_t* at = region.data;
  for (const Span& p : pieces) {
    if (!Update(ctx.get(), at, p)) return ThrowOpenSsl(env, "EVP_CipherUpdate");
    at += p.size;
  }
  int n = 0;
  if (EVP_CipherFinal_ex(ctx.get(), at, &n) != 1 || n != 0) return ThrowOpenSsl(env, "EVP_CipherFinal_ex");
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kTagSize), at) != 1) return ThrowOpenSsl(env, "EVP_CTRL_AEAD_GET_TAG");
  return Napi::Number::New(env, static_cast<double>(offset + total + kTagSize));
}

Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ClearErrorsOnReturn clear;
  if (info.Length() != 6) return Throw(env, "aeadOpen(key, nonce, aad, parts, tag, out | undefined)");
  Span key, nonce, aad, tag, out;
  std::vector<Span> parts;
  size_t total = 0;
  if (!SizedArg(info, 0, "key", kKeySize, &key) || !SizedArg(info, 1, "nonce", kNonceSize, &nonce)) return env.Undefined();
  if (!BytesArg(info[2], "aad", &aad) || !FitsInt(env, "aad", aad.size)) return env.Undefined();
  if (!PiecesArg(info, 3, "parts", &parts, &total) || !SizedArg(info, 4, "tag", kTagSize, &tag)) return env.Undefined();
  bool inPlace = info[5].IsUndefined();
  if (!inPlace) {
    if (!BytesArg(info[5], "out", &out)) return env.Undefined();
    if (out.size != total) return Throw(env, "out must be exactly as long as the ciphertext");
  }
  // Parts that shared bytes would be decrypted twice; out over a part or the tag would overwrite
  // ciphertext not yet read. The aad is read before anything is written.
  std::vector<Span> written(parts);
  written.push_back(tag);
  if (!inPlace) written.push_back(out);
  if (AnyOverlap(written)) return Throw(env, inPlace ? "the parts or the tag overlap" : "out, the parts or the tag overlap");

  // Zeroes every byte written so far unless disarmed: on any failure, nothing of an
  // unauthenticated plaintext is left for the caller.
  struct Wipe {
    std::vector<Span> spans;
    bool armed = true;
    ~Wipe() {
      if (!armed) return;
      for (const Span& s : spans) OPENSSL_cleanse(s.data, s.size);
    }
  } wipe;
  wipe.spans = inPlace ? parts : std::vector<Span>{out};

  const char* failed = nullptr;
  Ctx ctx = Start(false, key, nonce, aad, &failed);
  if (!ctx) return ThrowOpenSsl(env, failed);
  // The expected tag is copied into the context before any ciphertext goes through.
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kTagSize), tag.data) != 1) return ThrowOpenSsl(env, "EVP_CTRL_AEAD_SET_TAG");
  uint8_t* at = out.data;
  for (const Span& p : parts) {
    if (!Update(ctx.get(), inPlace ? p.data : at, p)) return ThrowOpenSsl(env, "EVP_CipherUpdate");
    if (!inPlace) at += p.size;
  }
  // Computes Poly1305 over aad and ciphertext (RFC 8439 2.8) and compares it with the tag in
  // constant time: 1 only if they match.
  uint8_t none[kTagSize];
  int n = 0;
  if (EVP_CipherFinal_ex(ctx.get(), none, &n) != 1 || n != 0) return Napi::Boolean::New(env, false);
  wipe.armed = false;
  return Napi::Boolean::New(env, true);
}

}  // namespace

// Called from the addon's Init (shim.cc). The functions are left out if this was compiled against
// OpenSSL headers of another major version than the node binary that loaded it, so the channel
// fails to start (it needs them) rather than calling into an ABI it was not built for.
void InitAead(Napi::Env env, Napi::Object exports) {
  if ((OpenSSL_version_num() >> 28) != (OPENSSL_VERSION_NUMBER >> 28)) return;
  exports.Set("aeadSeal", Napi::Function::New(env, Seal));
  exports.Set("aeadOpen", Napi::Function::New(env, Open));
}

}  // namespace airlock
