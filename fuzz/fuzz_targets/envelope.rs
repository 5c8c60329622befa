//! `envelope::decode` and `peek_network` on arbitrary bytes. Whatever decodes must
//! re-encode to exactly the same bytes (sealed again with the same tags when it carried
//! some): the decoder enforces canonical encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skywave::wire::envelope::{
    decode, encode, peek_network, seal, tag_prefix, ENVELOPE_VERSION, MIN_MESSAGE_LEN,
    TAGGED_VERSION,
};

fuzz_target!(|data: &[u8]| {
    let peeked = peek_network(data);
    if let Some(net) = peeked {
        assert!(
            data.len() >= MIN_MESSAGE_LEN
                && (data[0] == ENVELOPE_VERSION || data[0] == TAGGED_VERSION)
        );
        assert_eq!(net, [data[1], data[2], data[3], data[4]]);
    }
    if let Ok(env) = decode(data) {
        assert_eq!(peeked, Some(env.network), "decodable but peek_network disagrees");
        let untagged = encode(env.network, env.msg_id, &env.message);
        let again = if env.version == TAGGED_VERSION {
            let prefix = tag_prefix(&untagged);
            assert_eq!(prefix.len(), env.tagged_len);
            seal(prefix, &env.tags)
        } else {
            assert_eq!(env.version, ENVELOPE_VERSION);
            untagged
        };
        assert_eq!(again, data, "accepted a non-canonical encoding");
    }
});
