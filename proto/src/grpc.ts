// gRPC service definitions for @grpc/grpc-js, derived from the descriptors protoc-gen-es generates
// (proto/gen/): one declaration, the .proto file, for the firewall's server and the host's client.
// Handlers and callers may pass plain objects of a message's init shape (create() makes the message).
// A server takes requests as raw bytes and decodes them itself (wire.ts), so a malformed request
// gets INVALID_ARGUMENT naming the field rather than grpc-js's generic deserialization error.
import { create, fromBinary, toBinary, type DescMessage, type DescService, type MessageShape } from "@bufbuild/protobuf";
import type { ServiceDefinition } from "@grpc/grpc-js";

/** The gRPC path of a method: /package.Service/Method. */
export const grpcPath = (service: DescService, method: string): string => `/${service.typeName}/${method}`;

type Side = "server" | "client";

/** A grpc-js definition of `service`: the server gets request bytes as they came; the client gets decoded responses. */
export function grpcDefinition(service: DescService, side: Side): ServiceDefinition {
  const def: Record<string, ServiceDefinition[string]> = {};
  for (const m of service.methods) {
    const encode = (schema: DescMessage) => (msg: MessageShape<DescMessage>): Buffer => Buffer.from(toBinary(schema, create(schema, msg)));
    const decode = (schema: DescMessage) => (b: Buffer): MessageShape<DescMessage> => fromBinary(schema, b);
    const raw = (b: Buffer): Buffer => b;
    def[m.localName] = {
      path: grpcPath(service, m.name),
      requestStream: m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming",
      responseStream: m.methodKind === "server_streaming" || m.methodKind === "bidi_streaming",
      requestSerialize: encode(m.input),
      requestDeserialize: side === "server" ? raw : decode(m.input),
      responseSerialize: encode(m.output),
      responseDeserialize: decode(m.output),
      originalName: m.name,
    };
  }
  return def as ServiceDefinition;
}
