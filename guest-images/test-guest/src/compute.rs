//! The `compute` check's workload, the same on both architectures:
//! deterministic integer work with known answers (a sieve and FNV-1a), so a
//! VMM that corrupts registers or memory under plain computation is caught.

use core::hint::black_box;

/// Sieve bound and its expected prime count.
const SIEVE_LIMIT: usize = 4096;
const EXPECTED_PRIMES: u32 = 564;
/// FNV-1a (64-bit) of the 1 KiB pattern `byte[i] = i * 7 + 3 (mod 256)`.
const HASH_LEN: usize = 1024;
const EXPECTED_FNV1A: u64 = 0x2288_1ee4_7abb_6b25;

/// What the workload computed.
pub struct Computed {
    pub primes: u32,
    pub fnv1a: u64,
}

impl Computed {
    /// Whether both answers are the known ones.
    pub fn ok(&self) -> bool {
        self.primes == EXPECTED_PRIMES && self.fnv1a == EXPECTED_FNV1A
    }
}

/// Runs the workload (its inputs hidden from the optimiser).
pub fn run() -> Computed {
    Computed {
        primes: count_primes(black_box(SIEVE_LIMIT)),
        fnv1a: fnv1a_pattern(black_box(HASH_LEN)),
    }
}

/// Number of primes below `limit` (at most [`SIEVE_LIMIT`]), by sieve.
fn count_primes(limit: usize) -> u32 {
    let limit = limit.min(SIEVE_LIMIT);
    let mut composite = [false; SIEVE_LIMIT];
    let mut count = 0;
    for n in 2..limit {
        if composite[n] {
            continue;
        }
        count += 1;
        let mut multiple = n * n;
        while multiple < limit {
            composite[multiple] = true;
            multiple += n;
        }
    }
    count
}

/// FNV-1a (64-bit) of `len` bytes of the pattern `i * 7 + 3 (mod 256)`.
fn fnv1a_pattern(len: usize) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    (0..len).fold(OFFSET_BASIS, |hash, i| {
        let byte = (i as u8).wrapping_mul(7).wrapping_add(3);
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}
