import { defineConfig } from "vitest/config";

// Unit tests sit beside their code; integration and end-to-end tests (real QEMU guests, real
// sockets) live in test/. Guests under TCG are slow, so e2e tests run one file at a time.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["host-tools/**/*.test.ts", "firewall-vm/**/*.test.ts", "sandbox-vm/**/*.test.ts", "proto/**/*.test.ts", "images/**/*.test.ts"],
          testTimeout: 30_000,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/**/*.test.ts"],
          testTimeout: 300_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
