//! Generated Ethernet frames for the parser's property tests (against
//! etherparse) and its differential check against the kernel: VLAN and
//! QinQ tags, IPv4 options and fragments, IPv6 extension chains (hop-by-hop,
//! routing, fragment, AH, destination options), TCP/UDP and other
//! protocols, then mutated and truncated copies.
//!
//! Strategies, so that proptest shrinks a failure; [`sample`] draws a
//! seeded, reproducible series from the same strategies.

use proptest::{
    collection::vec,
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const AUTH: u8 = 51;
pub const DEST_OPTS: u8 = 60;

/// Sources worth generating besides random ones: the host's own addresses,
/// so that some frames pass and some are flagged.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub v4: Vec<[u8; 4]>,
    pub v6: Vec<[u8; 16]>,
}

#[derive(Clone, Copy, Debug)]
pub enum Extension {
    HopByHop {
        units: u8,
    },
    DestinationOptions {
        units: u8,
    },
    Routing {
        units: u8,
    },
    Fragment {
        offset: u16,
        more: bool,
    },
    /// AH payload length (in 4-byte words, minus 2); at least 1.
    Auth {
        words: u8,
    },
}

impl Extension {
    fn number(self) -> u8 {
        match self {
            Self::HopByHop { .. } => HOP_BY_HOP,
            Self::DestinationOptions { .. } => DEST_OPTS,
            Self::Routing { .. } => ROUTING,
            Self::Fragment { .. } => FRAGMENT,
            Self::Auth { .. } => AUTH,
        }
    }

    fn write(self, next: u8, filler: u8, out: &mut Vec<u8>) {
        match self {
            Self::HopByHop { units } | Self::DestinationOptions { units } | Self::Routing { units } => {
                out.extend_from_slice(&[next, units]);
                // PadN options of the right length keep the options valid.
                let rest = usize::from(units) * 8 + 6;
                out.extend_from_slice(&[1, (rest - 2) as u8]);
                out.extend(std::iter::repeat_n(0, rest - 2));
            }
            Self::Fragment { offset, more } => {
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, filler]);
            }
            Self::Auth { words } => {
                out.extend_from_slice(&[next, words, 0, 0]);
                out.extend(std::iter::repeat_n(filler, (usize::from(words) + 2) * 4 - 4));
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum Network {
    V4 {
        source: [u8; 4],
        destination: [u8; 4],
        /// In 4-byte words (0..=10).
        option_words: u8,
        fragment_offset: u16,
        more_fragments: bool,
    },
    V6 {
        source: [u8; 16],
        destination: [u8; 16],
        extensions: Vec<Extension>,
    },
    /// Anything else: ARP, LLDP, random EtherTypes.
    Other {
        ethertype: u16,
    },
}

#[derive(Clone, Debug)]
pub struct FrameSpec {
    /// (TPID, TCI) per in-band tag, outermost first.
    pub vlans: Vec<(u16, u16)>,
    pub network: Network,
    pub protocol: u8,
    pub ports: (u16, u16),
    pub payload: Vec<u8>,
}

impl FrameSpec {
    pub fn bytes(&self) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x0a];
        for (tpid, tci) in &self.vlans {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&tci.to_be_bytes());
        }
        let l4 = self.transport();
        match &self.network {
            Network::V4 { source, destination, option_words, fragment_offset, more_fragments } => {
                frame.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let header = 20 + 4 * usize::from(*option_words);
                frame.extend_from_slice(&[0x40 | (header / 4) as u8, 0]);
                frame.extend_from_slice(&((header + l4.len()) as u16).to_be_bytes());
                let flags = (u16::from(*more_fragments) << 13) | (fragment_offset & 0x1fff);
                frame.extend_from_slice(&[0, 1]);
                frame.extend_from_slice(&flags.to_be_bytes());
                frame.extend_from_slice(&[64, self.protocol, 0, 0]);
                frame.extend_from_slice(source);
                frame.extend_from_slice(destination);
                // No-operation options.
                frame.extend(std::iter::repeat_n(1, 4 * usize::from(*option_words)));
            }
            Network::V6 { source, destination, extensions } => {
                frame.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                let mut chain = Vec::new();
                for (i, extension) in extensions.iter().enumerate() {
                    let next = extensions.get(i + 1).map_or(self.protocol, |e| e.number());
                    extension.write(next, i as u8, &mut chain);
                }
                let first = extensions.first().map_or(self.protocol, |e| e.number());
                frame.extend_from_slice(&[0x60, 0, 0, 0]);
                frame.extend_from_slice(&((chain.len() + l4.len()) as u16).to_be_bytes());
                frame.extend_from_slice(&[first, 64]);
                frame.extend_from_slice(source);
                frame.extend_from_slice(destination);
                frame.extend_from_slice(&chain);
            }
            Network::Other { ethertype } => frame.extend_from_slice(&ethertype.to_be_bytes()),
        }
        frame.extend_from_slice(&l4);
        frame
    }

    /// Where the ports are in [`FrameSpec::bytes`].
    pub fn transport_offset(&self) -> usize {
        self.bytes().len() - self.transport().len()
    }

    fn transport(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.ports.0.to_be_bytes());
        l4.extend_from_slice(&self.ports.1.to_be_bytes());
        match self.protocol {
            TCP => {
                l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
            }
            UDP => {
                l4.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
            }
            _ => {}
        }
        l4.extend_from_slice(&self.payload);
        l4
    }
}

fn address_v4(sources: &Sources) -> BoxedStrategy<[u8; 4]> {
    let random = any::<[u8; 4]>().boxed();
    if sources.v4.is_empty() {
        return random;
    }
    prop_oneof![2 => proptest::sample::select(sources.v4.clone()), 1 => Just([0; 4]), 3 => random].boxed()
}

fn address_v6(sources: &Sources) -> BoxedStrategy<[u8; 16]> {
    let random = any::<[u8; 16]>().boxed();
    let link_local = any::<[u8; 8]>().prop_map(|low| {
        let mut address = [0u8; 16];
        address[..2].copy_from_slice(&[0xfe, 0x80]);
        address[8..].copy_from_slice(&low);
        address
    });
    if sources.v6.is_empty() {
        return prop_oneof![3 => random, 1 => link_local].boxed();
    }
    prop_oneof![2 => proptest::sample::select(sources.v6.clone()), 1 => Just([0; 16]), 1 => link_local, 3 => random]
        .boxed()
}

fn extension() -> impl Strategy<Value = Extension> {
    prop_oneof![
        (0u8..3).prop_map(|units| Extension::DestinationOptions { units }),
        (0u8..3).prop_map(|units| Extension::Routing { units }),
        (prop_oneof![Just(0u16), 0u16..0x1fff], any::<bool>())
            .prop_map(|(offset, more)| Extension::Fragment { offset, more }),
        (1u8..5).prop_map(|words| Extension::Auth { words }),
    ]
}

/// Hop-by-hop only first (RFC 8200), then up to `max - 1` others.
fn extensions(max: usize) -> impl Strategy<Value = Vec<Extension>> {
    (proptest::option::of(0u8..3), vec(extension(), 0..max)).prop_map(move |(hop_by_hop, rest)| {
        let mut chain: Vec<Extension> =
            hop_by_hop.map(|units| Extension::HopByHop { units }).into_iter().collect();
        chain.extend(rest);
        chain.truncate(max);
        chain
    })
}

fn network(sources: &Sources, max_extensions: usize) -> impl Strategy<Value = Network> {
    let fragment = prop_oneof![3 => Just((0u16, false)), 1 => (0u16..0x2000, any::<bool>())];
    prop_oneof![
        4 => (address_v4(sources), any::<[u8; 4]>(), prop_oneof![3 => Just(0u8), 1 => 0u8..=10], fragment).prop_map(
            |(source, destination, option_words, (fragment_offset, more_fragments))| Network::V4 {
                source,
                destination,
                option_words,
                fragment_offset,
                more_fragments,
            }
        ),
        4 => (address_v6(sources), any::<[u8; 16]>(), extensions(max_extensions))
            .prop_map(|(source, destination, extensions)| Network::V6 { source, destination, extensions }),
        1 => prop_oneof![Just(0x0806u16), Just(0x88ccu16), any::<u16>()]
            .prop_filter("not IP or a VLAN", |t| ![ETH_P_IP, ETH_P_IPV6, 0x8100, 0x88a8, 0x9100].contains(t))
            .prop_map(|ethertype| Network::Other { ethertype }),
    ]
}

fn vlans(max: usize) -> impl Strategy<Value = Vec<(u16, u16)>> {
    vec(
        (prop_oneof![2 => Just(0x8100u16), 2 => Just(0x88a8u16), 1 => Just(0x9100u16)], any::<u16>()),
        0..=max,
    )
}

/// Upper-layer protocols: TCP and UDP mostly, then ICMP, GRE and others
/// that are not IPv6 extension headers or AH (etherparse walks AH in IPv4;
/// the guard reports it as the protocol).
fn protocol() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(TCP), 3 => Just(UDP), 1 => Just(1u8), 1 => Just(58u8), 1 => any::<u8>()]
        .prop_filter("not an extension header", |p| {
            ![HOP_BY_HOP, ROUTING, FRAGMENT, AUTH, DEST_OPTS, 50, 135, 139, 140, 253, 254].contains(p)
        })
}

/// Frames etherparse reads whole: at most two tags and six IPv6 extension
/// headers (the guard's limits).
pub fn well_formed(sources: &Sources) -> impl Strategy<Value = FrameSpec> {
    (vlans(2), network(sources, 6), protocol(), any::<(u16, u16)>(), vec(any::<u8>(), 0..24)).prop_map(
        |(vlans, network, protocol, ports, payload)| FrameSpec { vlans, network, protocol, ports, payload },
    )
}

/// A change to a frame's bytes.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// XOR a byte (index modulo the header area).
    Flip {
        at: usize,
        with: u8,
    },
    Truncate {
        at: usize,
    },
    /// Another tag in front of the frame's own.
    ExtraTag,
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        match *mutation {
            Mutation::Flip { at, with } => {
                // Mostly within the headers, where the parser looks.
                let area = bytes.len().min(96);
                if area > 0 {
                    bytes[at % area] ^= with;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % (bytes.len() + 1)),
            Mutation::ExtraTag if bytes.len() >= 12 => {
                bytes.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
            }
            Mutation::ExtraTag => {}
        }
    }
    bytes
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, with)| Mutation::Flip { at, with }),
        2 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => Just(Mutation::ExtraTag),
    ]
}

/// Everything the differential check feeds the kernel: well-formed frames,
/// mutated and truncated ones, longer extension chains than the guard
/// walks, and random bytes.
pub fn any_frame(sources: &Sources) -> impl Strategy<Value = Vec<u8>> {
    let long_chains =
        (vlans(3), network(sources, 9), protocol(), any::<(u16, u16)>(), vec(any::<u8>(), 0..24)).prop_map(
            |(vlans, network, protocol, ports, payload)| {
                FrameSpec { vlans, network, protocol, ports, payload }.bytes()
            },
        );
    prop_oneof![
        5 => well_formed(sources).prop_map(|spec| spec.bytes()),
        3 => (well_formed(sources), vec(mutation(), 1..4)).prop_map(|(spec, mutations)| apply(spec.bytes(), &mutations)),
        1 => long_chains,
        1 => vec(any::<u8>(), 0..128),
    ]
}

/// `count` values of `strategy`, the same ones for the same `seed`.
pub fn sample<S: Strategy>(strategy: S, seed: u64, count: usize) -> impl Iterator<Item = S::Value> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner =
        TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &key));
    (0..count).map(move |_| match strategy.new_tree(&mut runner) {
        Ok(tree) => tree.current(),
        Err(reason) => panic!("the frame strategy rejected too many values: {reason}"),
    })
}
