// The agent↔enforcer channel: mutually attested, encrypted, over any Duplex (vsock through the
// host's fabric, which sees every byte). Two lines to use:
//   const { stream, peer } = await secureClient(socket, { attest, verifyPeer });   // agent
//   const { stream, peer } = await secureServer(socket, { attest, verifyPeer });   // enforcer
// With SEV-SNP evidence (snp-evidence.ts), e.g. in the enforcer:
//   attest: snpAttest(reportProvider),
//   verifyPeer: snpVerifyPeer(reportVerifier, { name: "sandbox", measurement: <the sandbox
//                             image's launch digest>, hostData: <the room's manifest digest> })
// `stream` then replaces the socket for sendMessage/sendData/readMessages (control.ts).
//
// Design (byte-level definition in protocol.ts):
// 1. Hellos, in clear: each side sends a fresh X25519 public key and a 32-byte random nonce
//    (client first). transcript = SHA-256(label ‖ client hello ‖ server hello).
// 2. Keys: HKDF-SHA-256(X25519 shared secret, salt = transcript) gives four keys: a handshake key
//    and an application key for each direction.
// 3. Evidence: each side calls attest(reportData) with reportData = SHA-512("airlock-channel-v1"
//    ‖ role ‖ transcript) — in production an SNP report whose report_data is that, with its VCEK
//    chain — and sends it encrypted under its handshake key. The peer checks it with
//    verifyPeer(evidence, expected reportData): signature chain, the expected measurement of that
//    peer, host_data = the room's manifest digest. Binding the transcript (both keys, both nonces)
//    means evidence cannot be replayed into another session, and only the VM that made the key
//    named in the report can derive the keys. The role in reportData stops reflection.
//    Order: the server sends its evidence first; the client verifies it, then sends its own; the
//    server verifies that and answers FINISHED. Either side that refuses sends an ALERT (why) and
//    hangs up, so both sides fail closed with a clear AirlockError (REPORT_REJECTED for a refusal,
//    GUEST_PROTOCOL for malformed traffic, TIMEOUT past the handshake bound).
// 4. Records: ChaCha20-Poly1305 with a 64-bit counter as nonce (one key per direction, so a nonce
//    never repeats), the 4-byte length header as associated data, at most 256 KiB of payload each
//    (MAX_PAYLOAD; a receiver refuses a longer length field before it buffers any of the body).
//    Tampering, truncation, reordering, replay, dropping and splicing records from another
//    session all fail authentication. end() sends an authenticated CLOSE; the wire ending without
//    one is reported as truncation (an error), never as a normal end.
// The returned Duplex honours backpressure both ways: write callbacks wait for the wire to drain,
// and records are only read off the wire as fast as the reader consumes them.
export { DEFAULT_HANDSHAKE_TIMEOUT_MS, secureClient, secureServer } from "./handshake.ts";
export type { ChannelOptions, Evidence, PeerIdentity, SecureChannel } from "./handshake.ts";
export { MAX_PAYLOAD, reportDataFor } from "./protocol.ts";
// Production evidence: SEV-SNP reports from a ReportProvider, checked by a report verifier.
export { snpAttest, snpVerifyPeer } from "./snp-evidence.ts";
export type { SnpPeerIdentity, SnpReportChecker } from "./snp-evidence.ts";
// Test-only helpers (test-evidence.ts, test-sockets.ts) are deliberately not exported here.
