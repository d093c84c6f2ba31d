/*
 * ECDSA P-256 with SHA-256 for the server's signing path, on the OpenSSL that
 * Node itself links (its symbols are exported to addons, its headers ship
 * with Node's). Node's crypto module reaches the same arithmetic through
 * OpenSSL 3's provider and decoder layers, which cost more than the
 * arithmetic: importing a CSR's public key alone takes ~60 µs there. Here a
 * public key is an uncompressed point read with o2i_ECPublicKey (which
 * rejects points not on the curve), and the CA key is loaded once.
 *
 *   verify(point, message, signature) -> boolean
 *       point: 65-byte uncompressed P-256 point; signature: DER ECDSA-Sig-Value
 *       (non-canonical DER is refused by ECDSA_verify itself).
 *   signer(scalar) -> handle     scalar: the 32-byte private key
 *   sign(handle, message) -> Buffer (DER ECDSA-Sig-Value over SHA-256(message))
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* EC_KEY: the low-level API is the fast one */
#include <stdbool.h>
#include <string.h>
#include <node_api.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/sha.h>

#define POINT_BYTES 65
#define SCALAR_BYTES 32

static napi_value throw_type(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

static napi_value throw_openssl(napi_env env, const char *what) {
  char msg[256];
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  snprintf(msg, sizeof msg, "%s failed: %s", what, code ? ERR_reason_error_string(code) : "unknown error");
  napi_throw_error(env, "EOPENSSL", msg);
  return NULL;
}

/* argv[i] as a Buffer; false (nothing thrown) when it is not one */
static bool buffer_arg(napi_env env, napi_value value, const unsigned char **data, size_t *length) {
  bool is_buffer = false;
  if (napi_is_buffer(env, value, &is_buffer) != napi_ok || !is_buffer) return false;
  void *p;
  if (napi_get_buffer_info(env, value, &p, length) != napi_ok) return false;
  *data = p;
  return true;
}

static napi_value verify(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  const unsigned char *point, *message, *signature;
  size_t point_len, message_len, signature_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      !buffer_arg(env, argv[0], &point, &point_len) || !buffer_arg(env, argv[1], &message, &message_len) ||
      !buffer_arg(env, argv[2], &signature, &signature_len)) {
    return throw_type(env, "verify(point, message, signature): three Buffers are required");
  }
  bool ok = false;
  EC_KEY *key = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  if (!key) return throw_openssl(env, "EC_KEY_new_by_curve_name");
  const unsigned char *p = point;
  if (point_len == POINT_BYTES && point[0] == 0x04 && o2i_ECPublicKey(&key, &p, (long)point_len) && p == point + point_len) {
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(message, message_len, digest);
    ok = ECDSA_verify(0, digest, sizeof digest, signature, (int)signature_len, key) == 1;
  }
  EC_KEY_free(key);
  ERR_clear_error(); /* a refused point or signature leaves errors on the queue; they are this call's answer, not the next one's */
  napi_value out;
  napi_get_boolean(env, ok, &out);
  return out;
}

static void free_key(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  EC_KEY_free(data);
}

static napi_value signer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  const unsigned char *scalar;
  size_t scalar_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      !buffer_arg(env, argv[0], &scalar, &scalar_len) || scalar_len != SCALAR_BYTES) {
    return throw_type(env, "signer(scalar): a 32-byte Buffer is required");
  }
  EC_KEY *key = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  BIGNUM *d = BN_bin2bn(scalar, (int)scalar_len, NULL);
  EC_POINT *pub = key ? EC_POINT_new(EC_KEY_get0_group(key)) : NULL;
  bool ok = key && d && pub && !BN_is_zero(d) &&
            EC_KEY_set_private_key(key, d) == 1 &&
            EC_POINT_mul(EC_KEY_get0_group(key), pub, d, NULL, NULL, NULL) == 1 &&
            EC_KEY_set_public_key(key, pub) == 1 &&
            EC_KEY_check_key(key) == 1;
  BN_clear_free(d);
  EC_POINT_free(pub);
  if (!ok) {
    EC_KEY_free(key);
    return throw_openssl(env, "loading the P-256 private key");
  }
  napi_value handle;
  if (napi_create_external(env, key, free_key, NULL, &handle) != napi_ok) {
    EC_KEY_free(key);
    return throw_type(env, "signer: could not wrap the key");
  }
  return handle;
}

static napi_value sign(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  void *key = NULL;
  napi_valuetype type;
  const unsigned char *message;
  size_t message_len;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_typeof(env, argv[0], &type) != napi_ok || type != napi_external ||
      napi_get_value_external(env, argv[0], &key) != napi_ok || !key ||
      !buffer_arg(env, argv[1], &message, &message_len)) {
    return throw_type(env, "sign(handle, message): a signer handle and a Buffer are required");
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(message, message_len, digest);
  unsigned char signature[80]; /* a P-256 DER signature is at most 72 bytes */
  unsigned int signature_len = 0;
  if (ECDSA_size(key) > (int)sizeof signature || ECDSA_sign(0, digest, sizeof digest, signature, &signature_len, key) != 1) {
    return throw_openssl(env, "ECDSA_sign");
  }
  napi_value out;
  void *copy;
  napi_create_buffer_copy(env, signature_len, signature, &copy, &out);
  return out;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn;
  napi_create_function(env, "verify", NAPI_AUTO_LENGTH, verify, NULL, &fn);
  napi_set_named_property(env, exports, "verify", fn);
  napi_create_function(env, "signer", NAPI_AUTO_LENGTH, signer, NULL, &fn);
  napi_set_named_property(env, exports, "signer", fn);
  napi_create_function(env, "sign", NAPI_AUTO_LENGTH, sign, NULL, &fn);
  napi_set_named_property(env, exports, "sign", fn);
  return exports;
}
