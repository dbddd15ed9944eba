//! The test guest's command line, read the same way on both architectures:
//! words separated by white space, of which `checks=<name>,<name>…` names
//! the checks to run and `expect_mib=<n>` the RAM the VMM announced (for
//! each, the last one wins).

/// Checks run when the command line has no `checks=`.
const DEFAULT_CHECKS: &[u8] = b"serial";

/// The value of the last word of `cmdline` that starts with `key` (which
/// ends with `=`).
fn last_value<'a>(cmdline: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    cmdline
        .split(|b| b.is_ascii_whitespace())
        .filter_map(|word| word.strip_prefix(key))
        .next_back()
}

/// The check names requested by `cmdline`, in order.
pub fn requested(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    let list = last_value(cmdline, b"checks=").unwrap_or(DEFAULT_CHECKS);
    list.split(|&b| b == b',').filter(|name| !name.is_empty())
}

/// The `expect_mib=` value, unparsed (the `memory` check reports a bad one).
pub fn expect_mib(cmdline: &[u8]) -> Option<&[u8]> {
    last_value(cmdline, b"expect_mib=")
}
