//! Guest-controlled vsock TX packets: any bytes must parse to a packet or
//! an error, never panic; a packet that parses re-encodes to its input.
#![no_main]

use devices::virtio::vsock::packet::{parse_packet, HDR_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_packet(data, 3) {
        Ok(pkt) => {
            assert_eq!(&pkt.header.to_bytes()[..], &data[..HDR_LEN]);
            assert_eq!(pkt.data, &data[HDR_LEN..]);
        }
        Err(e) => {
            let _ = (e.to_string(), e.rst_reply());
        }
    }
});
