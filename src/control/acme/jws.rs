//! The account key and the signed requests of ACME (RFC 8555 §6.2): ES256 (ECDSA P-256 with SHA-256)
//! JWS in flattened JSON form, the JWK and its thumbprint (RFC 7638), base64url without padding.
//!
//! Only cryptography and encoding; no I/O, and no key ever leaves this module except as PKCS#8 for
//! the shared account hash in Redis (README "Automatic HTTPS (ACME)").

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// base64url without padding (RFC 4648 §5).
pub fn b64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes base64url (no padding; padding and standard-alphabet characters tolerated).
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The account's key pair.
pub struct AccountKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    rng: SystemRandom,
}

impl AccountKey {
    /// A new random P-256 key.
    pub fn generate() -> Result<AccountKey, String> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate an ECDSA P-256 key".to_string())?;
        AccountKey::from_pkcs8(doc.as_ref())
    }

    /// The key stored in `acme:account` (PKCS#8 DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<AccountKey, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| format!("the ACME account key is not a P-256 PKCS#8 key: {e}"))?;
        Ok(AccountKey {
            pair,
            pkcs8: der.to_vec(),
            rng,
        })
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public JWK, members in the lexicographic order RFC 7638 needs for the thumbprint.
    pub fn jwk_json(&self) -> String {
        let point = self.pair.public_key().as_ref();
        // Uncompressed point: 0x04 || x (32) || y (32).
        let (x, y) = point[1..].split_at(32);
        format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            b64(x),
            b64(y)
        )
    }

    /// The JWK thumbprint (RFC 7638), base64url.
    pub fn thumbprint(&self) -> String {
        b64(&sha256(self.jwk_json().as_bytes()))
    }

    /// The key authorization of a challenge token (RFC 8555 §8.1).
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.thumbprint())
    }

    /// A flattened JWS of `payload` (`None`: POST-as-GET, empty payload) for `url`, identified by
    /// `kid` (the account URL) or, when `None`, by the JWK itself (newAccount).
    pub fn sign(
        &self,
        url: &str,
        nonce: &str,
        kid: Option<&str>,
        payload: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, String> {
        let mut protected = serde_json::json!({
            "alg": "ES256",
            "nonce": nonce,
            "url": url,
        });
        match kid {
            Some(k) => protected["kid"] = k.into(),
            None => {
                let jwk: serde_json::Value =
                    serde_json::from_str(&self.jwk_json()).map_err(|e| format!("JWK: {e}"))?;
                protected["jwk"] = jwk;
            }
        }
        let protected64 = b64(protected.to_string().as_bytes());
        let payload64 = match payload {
            Some(p) => b64(p.to_string().as_bytes()),
            None => String::new(),
        };
        let signing_input = format!("{protected64}.{payload64}");
        let sig = self
            .pair
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| "ECDSA signing failed".to_string())?;
        let body = serde_json::json!({
            "protected": protected64,
            "payload": payload64,
            "signature": b64(sig.as_ref()),
        });
        Ok(body.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg");
        assert_eq!(b64(b"fo"), "Zm8");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(&[0xfb, 0xff]), "-_8");
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foob",
            b"fooba",
            &[0xfb, 0xff, 0x00, 0x10],
        ] {
            assert_eq!(b64_decode(&b64(data)).unwrap(), data);
        }
        assert!(b64_decode("a b").is_none());
    }

    #[test]
    fn keys_round_trip_and_sign() {
        let k = AccountKey::generate().unwrap();
        let again = AccountKey::from_pkcs8(k.pkcs8()).unwrap();
        assert_eq!(k.thumbprint(), again.thumbprint());
        assert_eq!(k.thumbprint().len(), 43);
        let body = k
            .sign("https://ca/x", "n0nce", Some("https://ca/acct/1"), None)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["payload"], "");
        let protected = b64_decode(v["protected"].as_str().unwrap()).unwrap();
        let p: serde_json::Value = serde_json::from_slice(&protected).unwrap();
        assert_eq!(p["kid"], "https://ca/acct/1");
        assert_eq!(p["alg"], "ES256");
        // The signature verifies with the public key.
        let sig = b64_decode(v["signature"].as_str().unwrap()).unwrap();
        let input = format!("{}.", v["protected"].as_str().unwrap());
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            k.pair.public_key().as_ref(),
        );
        public.verify(input.as_bytes(), &sig).unwrap();
        assert!(AccountKey::from_pkcs8(b"junk").is_err());
    }
}
