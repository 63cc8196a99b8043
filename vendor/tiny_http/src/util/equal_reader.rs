use std::io::Read;
use std::io::Result as IoResult;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A `Reader` that reads exactly the number of bytes from a sub-reader.
///
/// If the limit is reached, it returns EOF. If the limit is not reached
/// when the destructor is called, the number of bytes left unread is stored
/// in `unread`; the connection thread then skips them or closes the connection
/// (see `ClientConnection::skip_unread_body`).
pub struct EqualReader<R>
where
    R: Read,
{
    reader: R,
    size: usize,
    unread: Arc<AtomicUsize>,
}

impl<R> EqualReader<R>
where
    R: Read,
{
    pub fn new(reader: R, size: usize, unread: Arc<AtomicUsize>) -> EqualReader<R> {
        EqualReader {
            reader,
            size,
            unread,
        }
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 {
            return Ok(0);
        }

        let buf = if buf.len() < self.size {
            buf
        } else {
            &mut buf[..self.size]
        };

        match self.reader.read(buf) {
            Ok(len) => {
                self.size -= len;
                Ok(len)
            }
            err @ Err(_) => err,
        }
    }
}

impl<R> Drop for EqualReader<R>
where
    R: Read,
{
    fn drop(&mut self) {
        // Upstream drained the rest of the body here with `vec![0; remaining]`, i.e. an
        // allocation sized by the client's Content-Length: 100 GB aborted the process,
        // usize::MAX panicked, and a client that never sent its 4 GB body blocked the
        // handler thread that dropped the request. Now nothing is read or allocated here;
        // the connection thread decides what to do with the leftover.
        self.unread.store(self.size, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::EqualReader;
    use std::io::Read;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn test_limit() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let mut equal_reader = EqualReader::new(org_reader.by_ref(), 5, Default::default());

            let mut string = String::new();
            equal_reader.read_to_string(&mut string).unwrap();
            assert_eq!(string, "hello");
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn test_not_enough() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());
        let unread = Arc::default();

        {
            let mut equal_reader = EqualReader::new(org_reader.by_ref(), 5, Arc::clone(&unread));

            let mut vec = [0];
            equal_reader.read_exact(&mut vec).unwrap();
            assert_eq!(vec[0], b'h');
        }

        // dropping does not drain any more (that is the connection's job), it reports
        assert_eq!(unread.load(Ordering::Acquire), 4);
        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, "ello world");
    }

    #[test]
    fn test_huge_size_allocates_nothing() {
        let unread = Arc::default();
        drop(EqualReader::new(
            std::io::empty(),
            usize::MAX,
            Arc::clone(&unread),
        ));
        assert_eq!(unread.load(Ordering::Acquire), usize::MAX);
    }
}
