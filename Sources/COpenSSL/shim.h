// libcrypto for CreddCrypto: SHA-256, HMAC-SHA256, random bytes, P-256 ECDSA.
#ifndef CREDD_COPENSSL_SHIM_H
#define CREDD_COPENSSL_SHIM_H
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/pem.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>

// BIO_get_mem_data is a macro.
static inline long credd_BIO_get_mem_data(BIO *bio, char **data) { return BIO_get_mem_data(bio, data); }
// EVP_EC_gen is a variadic macro; tests need fresh keys.
static inline EVP_PKEY *credd_EVP_EC_gen_p256(void) { return EVP_EC_gen("P-256"); }
#endif
