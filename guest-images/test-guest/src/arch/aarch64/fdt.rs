//! A read-only flattened device tree (DTB) reader: just enough to find the
//! nodes the guest needs by path or by property, and read their properties.
//!
//! The blob is the VMM's (x0 at entry), so every read is bounds-checked: a
//! malformed tree makes lookups fail (`None`), never reads outside it.

/// `FDT_MAGIC`, big-endian at offset 0.
const MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
/// Most bytes the reader accepts as a blob (`totalsize`).
const MAX_SIZE: u32 = 2 << 20;
/// Deepest node nesting [`Fdt::find_compatible`] follows.
const MAX_DEPTH: usize = 16;

/// A device tree blob in guest memory.
#[derive(Clone, Copy)]
pub struct Fdt {
    blob: &'static [u8],
    structs: (usize, usize),
    strings: (usize, usize),
}

/// A node: the offset of its `FDT_BEGIN_NODE` token in the structure
/// block, and the `#address-cells`/`#size-cells` of its parent, which say
/// how its `reg` is laid out.
#[derive(Clone, Copy)]
pub struct Node {
    offset: usize,
    pub addr_cells: u32,
    pub size_cells: u32,
}

/// A token of the structure block.
enum Token<'a> {
    Begin(&'a [u8]),
    End,
    Prop(&'a [u8], &'a [u8]),
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|n| n & !3)
}

/// A NUL-terminated string at the start of `bytes` (without the NUL).
fn c_str(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes.iter().position(|&b| b == 0)?;
    Some(&bytes[..end])
}

impl Fdt {
    /// Reads the header of the blob at `addr`.
    ///
    /// # Safety
    /// `addr` must be readable for the 40-byte header and then for the
    /// `totalsize` it declares (checked against [`MAX_SIZE`]): the VMM's FDT
    /// in RAM, never written while the guest runs.
    pub unsafe fn from_addr(addr: usize) -> Option<Fdt> {
        if addr == 0 || !addr.is_multiple_of(8) {
            return None;
        }
        // SAFETY: the caller guarantees the header is readable.
        let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 40) };
        if be32(header, 0)? != MAGIC {
            return None;
        }
        let total = be32(header, 4)?;
        if !(40..=MAX_SIZE).contains(&total) {
            return None;
        }
        // SAFETY: the caller guarantees `totalsize` bytes are readable.
        let blob = unsafe { core::slice::from_raw_parts(addr as *const u8, total as usize) };
        let range = |off: usize, size: usize| -> Option<(usize, usize)> {
            let off = be32(blob, off)? as usize;
            let size = be32(blob, size)? as usize;
            (off.checked_add(size)? <= blob.len()).then_some((off, off + size))
        };
        Some(Fdt {
            blob,
            structs: range(8, 36)?,
            strings: range(12, 32)?,
        })
    }

    /// The token at `at` in the structure block and the offset after it.
    fn token(&self, mut at: usize) -> Option<(Token<'static>, usize)> {
        let structs = &self.blob[self.structs.0..self.structs.1];
        loop {
            let tag = be32(structs, at)?;
            at += 4;
            match tag {
                FDT_NOP => continue,
                FDT_BEGIN_NODE => {
                    let name = c_str(structs.get(at..)?)?;
                    let next = align4(at + name.len() + 1)?;
                    return Some((Token::Begin(name), next));
                }
                FDT_END_NODE => return Some((Token::End, at)),
                FDT_PROP => {
                    let len = be32(structs, at)? as usize;
                    let name_off = be32(structs, at + 4)? as usize;
                    let value = structs.get(at + 8..(at + 8).checked_add(len)?)?;
                    let strings = &self.blob[self.strings.0..self.strings.1];
                    let name = c_str(strings.get(name_off..)?)?;
                    return Some((Token::Prop(name, value), align4(at + 8 + len)?));
                }
                _ => return None,
            }
        }
    }

    /// The root node.
    pub fn root(&self) -> Option<Node> {
        match self.token(0)? {
            (Token::Begin(_), _) => Some(Node {
                offset: 0,
                addr_cells: 2,
                size_cells: 1,
            }),
            _ => None,
        }
    }

    /// The name of `node` (`pl011@9000000`; empty for the root).
    pub fn name(&self, node: Node) -> &'static [u8] {
        match self.token(node.offset) {
            Some((Token::Begin(name), _)) => name,
            _ => b"",
        }
    }

    /// The property `name` of `node`.
    pub fn prop(&self, node: Node, name: &[u8]) -> Option<&'static [u8]> {
        let (_, mut at) = self.token(node.offset)?;
        loop {
            match self.token(at)? {
                (Token::Prop(n, value), next) => {
                    if n == name {
                        return Some(value);
                    }
                    at = next;
                }
                _ => return None,
            }
        }
    }

    /// A one-cell property such as `#address-cells`.
    pub fn prop_u32(&self, node: Node, name: &[u8]) -> Option<u32> {
        let value = self.prop(node, name)?;
        (value.len() == 4).then(|| be32(value, 0)).flatten()
    }

    /// Whether the string-list property `name` of `node` contains `want`.
    pub fn has_string(&self, node: Node, name: &[u8], want: &[u8]) -> bool {
        self.prop(node, name)
            .is_some_and(|list| list.split(|&b| b == 0).any(|s| s == want))
    }

    /// The `#address-cells` and `#size-cells` that `node` gives its children.
    fn child_cells(&self, node: Node) -> (u32, u32) {
        (
            self.prop_u32(node, b"#address-cells").unwrap_or(2),
            self.prop_u32(node, b"#size-cells").unwrap_or(1),
        )
    }

    /// Calls `visit` with each direct child of `node`, until it returns `true`.
    pub fn children(&self, node: Node, mut visit: impl FnMut(Node) -> bool) -> Option<()> {
        let (addr_cells, size_cells) = self.child_cells(node);
        let (_, mut at) = self.token(node.offset)?;
        loop {
            let (token, next) = self.token(at)?;
            match token {
                Token::Prop(..) => at = next,
                Token::End => return Some(()),
                Token::Begin(_) => {
                    let child = Node {
                        offset: at,
                        addr_cells,
                        size_cells,
                    };
                    if visit(child) {
                        return Some(());
                    }
                    at = self.skip_node(at)?;
                }
            }
        }
    }

    /// The offset after the node that begins at `at` (its `FDT_END_NODE`).
    fn skip_node(&self, at: usize) -> Option<usize> {
        let mut depth = 0usize;
        let mut at = at;
        loop {
            let (token, next) = self.token(at)?;
            match token {
                Token::Begin(_) => depth += 1,
                Token::End => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(next);
                    }
                }
                Token::Prop(..) => {}
            }
            at = next;
        }
    }

    /// The direct child of `node` called `name`: an exact match, or the
    /// part before `@` when `name` has no unit address.
    pub fn child(&self, node: Node, name: &[u8]) -> Option<Node> {
        let mut found = None;
        self.children(node, |child| {
            let full = self.name(child);
            let base = full.split(|&b| b == b'@').next().unwrap_or(full);
            let hit = full == name || (!name.contains(&b'@') && base == name);
            if hit {
                found = Some(child);
            }
            hit
        })?;
        found
    }

    /// The node at the absolute `path` (`/cpus/cpu@0`), or an alias
    /// (`serial0`) from `/aliases`. Anything after `:` (stdout-path
    /// options such as `:115200n8`) is ignored.
    pub fn find(&self, path: &[u8]) -> Option<Node> {
        let path = path.split(|&b| b == b':').next()?;
        let path = if path.first() == Some(&b'/') {
            path
        } else {
            let aliases = self.child(self.root()?, b"aliases")?;
            let target = self.prop(aliases, path)?;
            c_str(target)?
        };
        let mut node = self.root()?;
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            node = self.child(node, part)?;
        }
        Some(node)
    }

    /// The first node (depth first) whose `compatible` lists `want`.
    pub fn find_compatible(&self, want: &[u8]) -> Option<Node> {
        self.search(self.root()?, want, 0)
    }

    fn search(&self, node: Node, want: &[u8], depth: usize) -> Option<Node> {
        if self.has_string(node, b"compatible", want) {
            return Some(node);
        }
        if depth >= MAX_DEPTH {
            return None;
        }
        let mut found = None;
        self.children(node, |child| {
            found = self.search(child, want, depth + 1);
            found.is_some()
        })?;
        found
    }

    /// Entry `index` of `node`'s `reg`: `(address, size)`, laid out by the
    /// parent's cells (at most 2 each; a size of 0 cells reads as 0).
    pub fn reg(&self, node: Node, index: usize) -> Option<(u64, u64)> {
        let reg = self.prop(node, b"reg")?;
        let (a, s) = (node.addr_cells as usize, node.size_cells as usize);
        if a == 0 || a > 2 || s > 2 {
            return None;
        }
        let entry = (a + s) * 4;
        let at = index.checked_mul(entry)?;
        let cells = reg.get(at..at.checked_add(entry)?)?;
        let read = |from: usize, n: usize| -> Option<u64> {
            (0..n).try_fold(0u64, |acc, i| {
                Some((acc << 32) | u64::from(be32(cells, (from + i) * 4)?))
            })
        };
        Some((read(0, a)?, read(a, s)?))
    }

    /// How many entries `node`'s `reg` has.
    pub fn reg_count(&self, node: Node) -> usize {
        let entry = ((node.addr_cells + node.size_cells) * 4) as usize;
        match self.prop(node, b"reg") {
            Some(reg) if entry > 0 => reg.len() / entry,
            _ => 0,
        }
    }
}

/// A NUL-terminated string property's text (without the NUL).
pub fn text(value: &[u8]) -> &[u8] {
    c_str(value).unwrap_or(value)
}
