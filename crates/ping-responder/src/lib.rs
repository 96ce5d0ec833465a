//! What the test guest's `net-responder` mode answers on its virtio-net ports, as pure functions
//! over byte slices: ARP requests for its IPv4 address (RFC 826) and ICMP echo requests to it
//! (RFC 792), every other frame ignored with a reason. Nothing here touches a device: the guest
//! hands [`respond`] each received Ethernet frame (without the virtio-net header) and sends what
//! it writes into `out`.
//!
//! Every field of a received frame is reached through a bounds-checked slice of the frame, so a
//! short, truncated or lying frame (an IPv4 total length past its end, a header length below 20
//! bytes) is ignored, never read past. Received checksums are verified (the IPv4 header's and the
//! ICMP message's) and the reply's are computed ([`internet_checksum`], RFC 1071).
#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// An Ethernet (MAC) address.
pub type Mac = [u8; 6];
/// An IPv4 address, in network order.
pub type Ipv4 = [u8; 4];

/// The Ethernet header: destination, source, ethertype.
pub const ETH_HDR: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const BROADCAST_MAC: Mac = [0xFF; 6];
/// An ARP packet for IPv4 over Ethernet.
pub const ARP_LEN: usize = 28;
/// An ARP reply as [`respond`] writes it (no padding to Ethernet's 60-byte minimum: nothing on a
/// virtual switch needs it, and receivers accept short frames).
pub const ARP_FRAME_LEN: usize = ETH_HDR + ARP_LEN;
/// An IPv4 header without options (the reply's).
pub const IPV4_HDR: usize = 20;
/// The ICMP echo header: type, code, checksum, identifier, sequence number.
pub const ICMP_ECHO_HDR: usize = 8;
pub const IPPROTO_ICMP: u8 = 1;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// The TTL of the replies.
pub const REPLY_TTL: u8 = 64;

const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// IPv4 flags and fragment offset: more-fragments bit and the offset.
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1FFF;

/// The address the responder answers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub mac: Mac,
    pub ip: Ipv4,
}

/// What [`respond`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An ARP reply: `ip` is at `mac`.
    Arp,
    /// An ICMP echo reply with the request's identifier, sequence number and data.
    Echo,
}

/// Why a frame got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// Shorter than the headers it needs (or its IPv4 total length says).
    Truncated,
    /// Neither ARP nor IPv4.
    OtherEthertype,
    /// Sent from a group (multicast or broadcast) source MAC, or from our own MAC.
    BadSourceMac,
    /// Not addressed to our MAC (or, for ARP, broadcast).
    OtherDestination,
    /// ARP, but not an Ethernet/IPv4 request.
    NotArpRequest,
    /// An ARP request for another address.
    OtherTargetIp,
    /// Version not 4, header length below 20 bytes, or total length below the header length.
    BadIpHeader,
    BadIpChecksum,
    /// A fragment (more-fragments set or a non-zero offset): not reassembled.
    Fragment,
    /// IPv4 from an address no reply may go to (0.0.0.0, broadcast, multicast, ours).
    BadSourceIp,
    /// IPv4 to another address.
    OtherDestinationIp,
    /// IPv4, but not ICMP.
    NotIcmp,
    /// ICMP, but not an echo request (type 8, code 0).
    NotEchoRequest,
    BadIcmpChecksum,
    /// The reply does not fit the output buffer.
    NoRoom,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// The Internet checksum (RFC 1071): the one's complement of the one's-complement sum of the
/// big-endian 16-bit words of `data` (an odd last byte padded with zero). Over data that holds
/// its own correct checksum it is 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// A group address (multicast or broadcast): bit 0 of the first byte.
pub fn is_group_mac(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// An IPv4 source no reply may be sent to: unspecified, limited broadcast, multicast (224/4).
fn bad_source_ip(ip: &Ipv4) -> bool {
    *ip == [0; 4] || *ip == [255; 4] || (224..=239).contains(&ip[0])
}

/// Dotted-decimal IPv4 text (`10.0.0.2`) to an address: four decimal numbers 0..=255 of one to
/// three digits, separated by dots, nothing else.
pub fn parse_ipv4(text: &[u8]) -> Option<Ipv4> {
    let mut ip = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for octet in &mut ip {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value = part.iter().fold(0u16, |v, &d| v * 10 + u16::from(d - b'0'));
        *octet = u8::try_from(value).ok()?;
    }
    parts.next().is_none().then_some(ip)
}

/// Shows an IPv4 address as dotted decimal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dotted(pub Ipv4);

impl fmt::Display for Dotted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// Answers `frame` (an Ethernet frame as received, header included, possibly padded) for `me`:
/// an ARP request for `me.ip` gets an ARP reply, an ICMP echo request to `me.ip` (and `me.mac`)
/// an echo reply with the same identifier, sequence number and data. The reply is written to
/// the start of `out`; returns its kind and length. Anything else is `Err` with the reason, and
/// `out` is then unspecified.
pub fn respond(me: &Identity, frame: &[u8], out: &mut [u8]) -> Result<(Answer, usize), Ignored> {
    let dst: Mac = array(frame, 0).ok_or(Ignored::Truncated)?;
    let src: Mac = array(frame, 6).ok_or(Ignored::Truncated)?;
    let ethertype = be16(frame, 12).ok_or(Ignored::Truncated)?;
    if is_group_mac(&src) || src == me.mac {
        return Err(Ignored::BadSourceMac);
    }
    let payload = &frame[ETH_HDR..];
    match ethertype {
        ETHERTYPE_ARP => {
            if dst != me.mac && dst != BROADCAST_MAC {
                return Err(Ignored::OtherDestination);
            }
            arp(me, payload, out).map(|n| (Answer::Arp, n))
        }
        ETHERTYPE_IPV4 => {
            if dst != me.mac {
                return Err(Ignored::OtherDestination);
            }
            echo(me, src, payload, out).map(|n| (Answer::Echo, n))
        }
        _ => Err(Ignored::OtherEthertype),
    }
}

/// Writes the Ethernet header of a reply to `to`.
fn eth_header(out: &mut [u8], me: &Identity, to: Mac, ethertype: u16) {
    out[0..6].copy_from_slice(&to);
    out[6..12].copy_from_slice(&me.mac);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

fn arp(me: &Identity, arp: &[u8], out: &mut [u8]) -> Result<usize, Ignored> {
    let arp = arp.get(..ARP_LEN).ok_or(Ignored::Truncated)?;
    let htype = be16(arp, 0).ok_or(Ignored::Truncated)?;
    let ptype = be16(arp, 2).ok_or(Ignored::Truncated)?;
    let oper = be16(arp, 6).ok_or(Ignored::Truncated)?;
    if htype != ARP_HTYPE_ETHERNET
        || ptype != ETHERTYPE_IPV4
        || arp[4] != 6
        || arp[5] != 4
        || oper != ARP_REQUEST
    {
        return Err(Ignored::NotArpRequest);
    }
    let sha: Mac = array(arp, 8).ok_or(Ignored::Truncated)?;
    let spa: Ipv4 = array(arp, 14).ok_or(Ignored::Truncated)?;
    let tpa: Ipv4 = array(arp, 24).ok_or(Ignored::Truncated)?;
    if tpa != me.ip {
        return Err(Ignored::OtherTargetIp);
    }
    if is_group_mac(&sha) || sha == [0; 6] || sha == me.mac {
        return Err(Ignored::BadSourceMac);
    }
    let out = out.get_mut(..ARP_FRAME_LEN).ok_or(Ignored::NoRoom)?;
    eth_header(out, me, sha, ETHERTYPE_ARP);
    let r = &mut out[ETH_HDR..];
    r[0..2].copy_from_slice(&ARP_HTYPE_ETHERNET.to_be_bytes());
    r[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    r[4] = 6;
    r[5] = 4;
    r[6..8].copy_from_slice(&ARP_REPLY.to_be_bytes());
    r[8..14].copy_from_slice(&me.mac);
    r[14..18].copy_from_slice(&me.ip);
    r[18..24].copy_from_slice(&sha);
    r[24..28].copy_from_slice(&spa);
    Ok(ARP_FRAME_LEN)
}

fn echo(me: &Identity, from: Mac, ip: &[u8], out: &mut [u8]) -> Result<usize, Ignored> {
    let first = *ip.first().ok_or(Ignored::Truncated)?;
    let ihl = usize::from(first & 0x0F) * 4;
    if first >> 4 != 4 || ihl < IPV4_HDR {
        return Err(Ignored::BadIpHeader);
    }
    let header = ip.get(..ihl).ok_or(Ignored::Truncated)?;
    let total = usize::from(be16(header, 2).ok_or(Ignored::Truncated)?);
    if total < ihl {
        return Err(Ignored::BadIpHeader);
    }
    // Bytes past the total length are Ethernet padding.
    let packet = ip.get(..total).ok_or(Ignored::Truncated)?;
    if internet_checksum(header) != 0 {
        return Err(Ignored::BadIpChecksum);
    }
    let frag = be16(header, 6).ok_or(Ignored::Truncated)?;
    if frag & (IP_MF | IP_OFFSET) != 0 {
        return Err(Ignored::Fragment);
    }
    let src: Ipv4 = array(header, 12).ok_or(Ignored::Truncated)?;
    let dst: Ipv4 = array(header, 16).ok_or(Ignored::Truncated)?;
    if dst != me.ip {
        return Err(Ignored::OtherDestinationIp);
    }
    if bad_source_ip(&src) || src == me.ip {
        return Err(Ignored::BadSourceIp);
    }
    if header[9] != IPPROTO_ICMP {
        return Err(Ignored::NotIcmp);
    }
    let icmp = &packet[ihl..];
    if icmp.len() < ICMP_ECHO_HDR {
        return Err(Ignored::Truncated);
    }
    if icmp[0] != ICMP_ECHO_REQUEST || icmp[1] != 0 {
        return Err(Ignored::NotEchoRequest);
    }
    if internet_checksum(icmp) != 0 {
        return Err(Ignored::BadIcmpChecksum);
    }
    let ip_len = IPV4_HDR + icmp.len();
    let len = ETH_HDR + ip_len;
    let out = out.get_mut(..len).ok_or(Ignored::NoRoom)?;
    eth_header(out, me, from, ETHERTYPE_IPV4);
    let (h, reply) = out[ETH_HDR..].split_at_mut(IPV4_HDR);
    h[0] = 0x45;
    h[1] = header[1];
    // ip_len <= total <= u16::MAX: the reply drops the request's options, if any.
    h[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    h[4..6].copy_from_slice(&header[4..6]);
    h[6..8].copy_from_slice(&[0, 0]);
    h[8] = REPLY_TTL;
    h[9] = IPPROTO_ICMP;
    h[10..12].copy_from_slice(&[0, 0]);
    h[12..16].copy_from_slice(&me.ip);
    h[16..20].copy_from_slice(&src);
    let sum = internet_checksum(h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    reply.copy_from_slice(icmp);
    reply[0] = ICMP_ECHO_REPLY;
    reply[1] = 0;
    reply[2..4].copy_from_slice(&[0, 0]);
    let sum = internet_checksum(reply);
    reply[2..4].copy_from_slice(&sum.to_be_bytes());
    Ok(len)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec;
    use std::vec::Vec;

    const ME: Identity = Identity {
        mac: [0x02, 0x51, 0, 0, 1, 0],
        ip: [10, 0, 0, 2],
    };
    const PEER_MAC: Mac = [0x02, 0x51, 0, 0, 0, 0];
    const PEER_IP: Ipv4 = [10, 0, 0, 1];

    fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn arp_request(sha: Mac, spa: Ipv4, tpa: Ipv4) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&sha);
        a.extend_from_slice(&spa);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&tpa);
        eth(BROADCAST_MAC, sha, ETHERTYPE_ARP, &a)
    }

    /// An IPv4 packet (header with `options`, checksummed) around `payload`.
    fn ipv4(src: Ipv4, dst: Ipv4, proto: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let ihl = 20 + options.len();
        let total = (ihl + payload.len()) as u16;
        let mut h = vec![(0x40 | (ihl / 4)) as u8, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        h.extend_from_slice(options);
        let sum = internet_checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    fn icmp(kind: u8, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0];
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(data);
        let sum = internet_checksum(&m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        m
    }

    /// What Linux's ping sends: 56 data bytes.
    fn ping(id: u16, seq: u16) -> Vec<u8> {
        let data: Vec<u8> = (0..56u8).collect();
        let packet = ipv4(PEER_IP, ME.ip, IPPROTO_ICMP, &[], &icmp(8, id, seq, &data));
        eth(ME.mac, PEER_MAC, ETHERTYPE_IPV4, &packet)
    }

    fn answer(frame: &[u8]) -> Result<(Answer, Vec<u8>), Ignored> {
        let mut out = [0xEEu8; 1600];
        let (kind, n) = respond(&ME, frame, &mut out)?;
        Ok((kind, out[..n].to_vec()))
    }

    #[test]
    fn checksum_known_values() {
        // RFC 1071's example words: sum 0xddf2, checksum its complement.
        assert_eq!(
            internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // A real IPv4 header (checksum field zeroed) and its checksum 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(internet_checksum(&h), 0, "verifies to 0 with its checksum");
        // An odd length pads with a zero byte; the empty sum is 0.
        assert_eq!(internet_checksum(&[0x12]), !0x1200);
        assert_eq!(internet_checksum(&[]), 0xFFFF);
        // Carries fold back in.
        assert_eq!(internet_checksum(&[0xFF, 0xFF, 0x00, 0x01]), !0x0001);
    }

    #[test]
    fn ipv4_text() {
        assert_eq!(parse_ipv4(b"10.0.0.2"), Some([10, 0, 0, 2]));
        assert_eq!(parse_ipv4(b"255.255.255.0"), Some([255, 255, 255, 0]));
        assert_eq!(parse_ipv4(b"010.0.0.1"), Some([10, 0, 0, 1]));
        for bad in [
            &b""[..],
            b"10.0.0",
            b"10.0.0.2.3",
            b"10.0.0.256",
            b"10..0.2",
            b"10.0.0.2/24",
            b"1000.0.0.2",
            b"a.b.c.d",
            b" 10.0.0.2",
            b"10.0.0.",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{:?}", std::str::from_utf8(bad));
        }
        assert_eq!(std::format!("{}", Dotted([10, 0, 0, 2])), "10.0.0.2");
    }

    #[test]
    fn arp_request_gets_a_reply() {
        let (kind, reply) = answer(&arp_request(PEER_MAC, PEER_IP, ME.ip)).unwrap();
        assert_eq!(kind, Answer::Arp);
        assert_eq!(reply.len(), ARP_FRAME_LEN);
        let mut want = eth(PEER_MAC, ME.mac, ETHERTYPE_ARP, &[0, 1, 8, 0, 6, 4, 0, 2]);
        want.extend_from_slice(&ME.mac);
        want.extend_from_slice(&ME.ip);
        want.extend_from_slice(&PEER_MAC);
        want.extend_from_slice(&PEER_IP);
        assert_eq!(reply, want);
    }

    #[test]
    fn arp_unicast_and_padded_requests_are_answered() {
        let mut f = arp_request(PEER_MAC, PEER_IP, ME.ip);
        f[0..6].copy_from_slice(&ME.mac);
        f.resize(60, 0);
        assert_eq!(answer(&f).unwrap().0, Answer::Arp);
    }

    #[test]
    fn other_arp_is_ignored() {
        let other = arp_request(PEER_MAC, PEER_IP, [10, 0, 0, 3]);
        assert_eq!(answer(&other), Err(Ignored::OtherTargetIp));
        let mut reply = arp_request(PEER_MAC, PEER_IP, ME.ip);
        reply[ETH_HDR + 7] = 2;
        assert_eq!(answer(&reply), Err(Ignored::NotArpRequest));
        let mut ipv6 = arp_request(PEER_MAC, PEER_IP, ME.ip);
        ipv6[ETH_HDR + 2] = 0x86;
        assert_eq!(answer(&ipv6), Err(Ignored::NotArpRequest));
        let mut elsewhere = arp_request(PEER_MAC, PEER_IP, ME.ip);
        elsewhere[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
        assert_eq!(answer(&elsewhere), Err(Ignored::OtherDestination));
        let mut group_sender = arp_request(PEER_MAC, PEER_IP, ME.ip);
        group_sender[ETH_HDR + 8] = 0x01;
        assert_eq!(answer(&group_sender), Err(Ignored::BadSourceMac));
        let own = arp_request(ME.mac, PEER_IP, ME.ip);
        assert_eq!(answer(&own), Err(Ignored::BadSourceMac));
    }

    #[test]
    fn echo_request_gets_a_reply() {
        let request = ping(0x4242, 7);
        let (kind, reply) = answer(&request).unwrap();
        assert_eq!(kind, Answer::Echo);
        assert_eq!(reply.len(), request.len());
        assert_eq!(&reply[0..6], &PEER_MAC);
        assert_eq!(&reply[6..12], &ME.mac);
        assert_eq!(&reply[12..14], &[0x08, 0x00]);
        let ip = &reply[ETH_HDR..];
        assert_eq!(ip[0], 0x45);
        assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
        assert_eq!(ip[8], REPLY_TTL);
        assert_eq!(ip[9], IPPROTO_ICMP);
        assert_eq!(&ip[12..16], &ME.ip);
        assert_eq!(&ip[16..20], &PEER_IP);
        assert_eq!(internet_checksum(&ip[..20]), 0, "IPv4 header checksum");
        let m = &ip[20..];
        assert_eq!((m[0], m[1]), (ICMP_ECHO_REPLY, 0));
        assert_eq!(internet_checksum(m), 0, "ICMP checksum");
        let req = &request[ETH_HDR + 20..];
        assert_eq!(&m[4..], &req[4..], "identifier, sequence and data echoed");
        assert_eq!(&m[4..8], &[0x42, 0x42, 0, 7]);
    }

    #[test]
    fn echo_reply_to_a_request_with_options_and_padding() {
        let data = [0xA5u8; 5];
        let packet = ipv4(
            PEER_IP,
            ME.ip,
            IPPROTO_ICMP,
            &[1, 1, 1, 0],
            &icmp(8, 1, 2, &data),
        );
        let mut f = eth(ME.mac, PEER_MAC, ETHERTYPE_IPV4, &packet);
        f.resize(f.len() + 9, 0x77);
        let (_, reply) = answer(&f).unwrap();
        let ip = &reply[ETH_HDR..];
        assert_eq!(ip.len(), 20 + 8 + data.len(), "no options, no padding");
        assert_eq!(internet_checksum(&ip[..20]), 0);
        assert_eq!(internet_checksum(&ip[20..]), 0, "odd length");
        assert_eq!(&ip[28..], &data);
    }

    #[test]
    fn bad_or_foreign_ipv4_is_ignored() {
        let good = ping(1, 1);
        const IP0: usize = ETH_HDR;
        type Damage = dyn Fn(&mut Vec<u8>);
        let cases: [(&Damage, Ignored); 11] = [
            (&|f| f[IP0 + 10] ^= 1, Ignored::BadIpChecksum),
            (&|f| f[IP0 + 24] ^= 1, Ignored::BadIcmpChecksum),
            (&|f| f[IP0 + 50] ^= 1, Ignored::BadIcmpChecksum),
            (&|f| f[IP0] = 0x65, Ignored::BadIpHeader),
            (&|f| f[IP0] = 0x44, Ignored::BadIpHeader),
            (
                &|f| f[0..6].copy_from_slice(&BROADCAST_MAC),
                Ignored::OtherDestination,
            ),
            (&|f| f[6] = 0x01, Ignored::BadSourceMac),
            (
                &|f| f[12..14].copy_from_slice(&[0x86, 0xDD]),
                Ignored::OtherEthertype,
            ),
            (&|f| f.truncate(IP0 + 30), Ignored::Truncated),
            (&|f| f.truncate(IP0 + 10), Ignored::Truncated),
            (&|f| f.truncate(13), Ignored::Truncated),
        ];
        for (i, (damage, why)) in cases.iter().enumerate() {
            let mut f = good.clone();
            damage(&mut f);
            assert_eq!(answer(&f), Err(*why), "case {i}");
        }
    }

    #[test]
    fn valid_packets_that_are_not_our_echo_requests_are_ignored() {
        let data = [1u8; 8];
        let frame = |src: Ipv4, dst: Ipv4, proto: u8, payload: &[u8]| {
            eth(
                ME.mac,
                PEER_MAC,
                ETHERTYPE_IPV4,
                &ipv4(src, dst, proto, &[], payload),
            )
        };
        let echo = icmp(8, 1, 1, &data);
        assert_eq!(
            answer(&frame(PEER_IP, [10, 0, 0, 9], 1, &echo)),
            Err(Ignored::OtherDestinationIp)
        );
        for src in [[0; 4], [255; 4], [224, 0, 0, 1], ME.ip] {
            assert_eq!(
                answer(&frame(src, ME.ip, 1, &echo)),
                Err(Ignored::BadSourceIp)
            );
        }
        assert_eq!(
            answer(&frame(PEER_IP, ME.ip, 17, &echo)),
            Err(Ignored::NotIcmp)
        );
        assert_eq!(
            answer(&frame(PEER_IP, ME.ip, 1, &icmp(0, 1, 1, &data))),
            Err(Ignored::NotEchoRequest),
            "an echo reply is not answered"
        );
        assert_eq!(
            answer(&frame(PEER_IP, ME.ip, 1, &[8, 0, 0xF7, 0xFF])),
            Err(Ignored::Truncated),
            "ICMP shorter than the echo header"
        );
        // A fragment: more-fragments set (checksum redone), or an offset.
        for flags in [0x20u8, 0x00] {
            let mut f = frame(PEER_IP, ME.ip, 1, &echo);
            f[ETH_HDR + 6] = flags;
            f[ETH_HDR + 7] = if flags == 0 { 8 } else { 0 };
            f[ETH_HDR + 10..ETH_HDR + 12].copy_from_slice(&[0, 0]);
            let sum = internet_checksum(&f[ETH_HDR..ETH_HDR + 20]);
            f[ETH_HDR + 10..ETH_HDR + 12].copy_from_slice(&sum.to_be_bytes());
            assert_eq!(answer(&f), Err(Ignored::Fragment));
        }
    }

    #[test]
    fn total_length_past_the_frame_or_below_the_header() {
        for total in [0u16, 19, 200, 0xFFFF] {
            let mut f = ping(1, 1);
            f[ETH_HDR + 2..ETH_HDR + 4].copy_from_slice(&total.to_be_bytes());
            f[ETH_HDR + 10..ETH_HDR + 12].copy_from_slice(&[0, 0]);
            let sum = internet_checksum(&f[ETH_HDR..ETH_HDR + 20]);
            f[ETH_HDR + 10..ETH_HDR + 12].copy_from_slice(&sum.to_be_bytes());
            let want = if total < 20 {
                Ignored::BadIpHeader
            } else {
                Ignored::Truncated
            };
            assert_eq!(answer(&f), Err(want), "total {total}");
        }
    }

    #[test]
    fn a_small_output_buffer_is_not_overrun() {
        let mut out = [0u8; ARP_FRAME_LEN - 1];
        let arp = arp_request(PEER_MAC, PEER_IP, ME.ip);
        assert_eq!(respond(&ME, &arp, &mut out), Err(Ignored::NoRoom));
        let mut out = [0u8; 64];
        assert_eq!(respond(&ME, &ping(1, 1), &mut out), Err(Ignored::NoRoom));
    }

    #[test]
    fn every_prefix_of_a_valid_frame_is_ignored_without_panic() {
        for frame in [ping(3, 4), arp_request(PEER_MAC, PEER_IP, ME.ip)] {
            for n in 0..frame.len() {
                let r = answer(&frame[..n]);
                assert!(r.is_err(), "a {n}-byte prefix was answered");
            }
        }
    }

    /// Pseudo-random frames (and damaged valid ones) never panic, and any reply is well-formed.
    #[test]
    fn random_frames_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [ping(9, 9), arp_request(PEER_MAC, PEER_IP, ME.ip)];
        for i in 0..20_000 {
            let mut f = seeds[i % 2].clone();
            if i % 3 == 0 {
                let len = (next() % 120) as usize;
                f = (0..len).map(|_| next() as u8).collect();
            } else {
                for _ in 0..(next() % 4) {
                    let at = (next() as usize) % f.len();
                    f[at] = next() as u8;
                }
                f.truncate((next() as usize) % (f.len() + 1));
            }
            let mut out = [0u8; 256];
            if let Ok((kind, n)) = respond(&ME, &f, &mut out) {
                let reply = &out[..n];
                assert_eq!(&reply[6..12], &ME.mac);
                if kind == Answer::Echo {
                    assert_eq!(internet_checksum(&reply[ETH_HDR..ETH_HDR + 20]), 0);
                    assert_eq!(internet_checksum(&reply[ETH_HDR + 20..]), 0);
                }
            }
        }
    }
}
