//! The stored form of a record: a small header (version, origin, tombstone flag) + JSON text.
//!
//! Layout: `[format=1][flags][version: u64 BE][origin id: u32 BE][json...]`. A tombstone has the
//! deleted flag and no JSON. The origin is the node-local id of the origin node's name (ids are
//! mapped back to names for the LWW tie-break).

const FORMAT: u8 = 1;
const FLAG_DELETED: u8 = 1;
const HEADER_LEN: usize = 14;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub version: u64,
    pub origin: u32,
    /// None for a tombstone.
    pub json: Option<Vec<u8>>,
}

impl StoredRecord {
    pub fn is_tombstone(&self) -> bool {
        self.json.is_none()
    }

    pub fn encode(&self) -> Vec<u8> {
        let body = self.json.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.push(FORMAT);
        out.push(if self.json.is_none() { FLAG_DELETED } else { 0 });
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Decodes a stored value; None means the bytes are not a record of a format we know (which
    /// only happens with a corrupt or foreign store).
    pub fn decode(b: &[u8]) -> Option<StoredRecord> {
        let header = b.get(..HEADER_LEN)?;
        if header[0] != FORMAT {
            return None;
        }
        let version = u64::from_be_bytes(header[2..10].try_into().ok()?);
        let origin = u32::from_be_bytes(header[10..14].try_into().ok()?);
        let json = if header[1] & FLAG_DELETED != 0 {
            None
        } else {
            Some(b[HEADER_LEN..].to_vec())
        };
        Some(StoredRecord {
            version,
            origin,
            json,
        })
    }

    /// The JSON body of a stored value without copying the header (None for tombstones).
    pub fn json_slice(b: &[u8]) -> Option<&[u8]> {
        let header = b.get(..HEADER_LEN)?;
        if header[0] != FORMAT || header[1] & FLAG_DELETED != 0 {
            return None;
        }
        Some(&b[HEADER_LEN..])
    }

    /// `(version, origin)` of a stored value without decoding the JSON.
    pub fn header(b: &[u8]) -> Option<(u64, u32, bool)> {
        let header = b.get(..HEADER_LEN)?;
        if header[0] != FORMAT {
            return None;
        }
        Some((
            u64::from_be_bytes(header[2..10].try_into().ok()?),
            u32::from_be_bytes(header[10..14].try_into().ok()?),
            header[1] & FLAG_DELETED != 0,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_tombstones_round_trip() {
        for r in [
            StoredRecord {
                version: 1 << 40,
                origin: 3,
                json: Some(br#"{"id":1}"#.to_vec()),
            },
            StoredRecord {
                version: 7,
                origin: 0,
                json: None,
            },
        ] {
            let b = r.encode();
            assert_eq!(StoredRecord::decode(&b), Some(r.clone()));
            assert_eq!(StoredRecord::json_slice(&b), r.json.as_deref());
            assert_eq!(
                StoredRecord::header(&b),
                Some((r.version, r.origin, r.is_tombstone()))
            );
        }
        assert_eq!(StoredRecord::decode(&[9, 9]), None);
    }
}
