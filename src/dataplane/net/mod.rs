//! Connection-level network helpers that come before HTTP: the PROXY protocol header sent by a load
//! balancer ([`proxy_header`] parses, [`proxy_accept`] reads it off a socket) and the CIDR blocks of
//! `server.trustedProxies` ([`cidr`]). README, "Behind a load balancer: PROXY protocol". Nothing here
//! speaks HTTP or touches routing.

pub mod cidr;
pub mod proxy_accept;
pub mod proxy_header;
