//! CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`, or a bare address meaning /32 or /128) for
//! `server.trustedProxies` (README, "Behind a load balancer: PROXY protocol"), parsed strictly.
//!
//! Pure and allocation-free on the matching side: a connection's address is compared against a short,
//! immutable list (bounded by [`MAX_TRUSTED_PROXIES`]). It must not resolve names or read anything.

use std::net::IpAddr;

/// Most entries in `server.trustedProxies` (README, "Limits").
pub const MAX_TRUSTED_PROXIES: usize = 1024;

/// One address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n` or a bare address. The address must be the block's first one
    /// (`10.0.0.1/8` is refused: it usually hides a typo), the prefix a plain decimal in range.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR block: {ip:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!(
                        "{s:?} is not a CIDR block: bad prefix length {p:?}"
                    ));
                }
                let n: u8 = p
                    .parse()
                    .map_err(|_| format!("{s:?} is not a CIDR block: bad prefix length {p:?}"))?;
                if n > max {
                    return Err(format!(
                        "{s:?} is not a CIDR block: prefix length {n} is more than {max}"
                    ));
                }
                n
            }
        };
        let c = Cidr { addr, prefix };
        if !c.contains(addr) || c.network() != addr {
            return Err(format!(
                "{s:?} has bits set after the prefix: did you mean {}/{prefix}?",
                c.network()
            ));
        }
        Ok(c)
    }

    /// The block's first address.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let m = mask32(self.prefix);
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = mask128(self.prefix);
                IpAddr::V6((u128::from(a) & m).into())
            }
        }
    }

    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) matches IPv4
    /// blocks, as the same client seen on a dual-stack socket.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let m = mask32(self.prefix);
                u32::from(net) & m == u32::from(a) & m
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let m = mask128(self.prefix);
                u128::from(net) & m == u128::from(a) & m
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

/// Whether `ip` is inside any of `blocks`.
pub fn any_contains(blocks: &[Cidr], ip: IpAddr) -> bool {
    blocks.iter().any(|b| b.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_matches() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("11.0.0.0")));
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("1.2.3.4")) && !all.contains(ip("::1")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
    }

    #[test]
    fn strict() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0.0/08x",
            "::/129",
            "10.0.0.1/8",
            "example.com/8",
            "10.0.0/8",
            " 10.0.0.0/8",
            "10.0.0.0/8/8",
            "10.0.0.0/0008",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
