import js from "@eslint/js";
import tseslint from "typescript-eslint";
import globals from "globals";
import importX, { createNodeResolver } from "eslint-plugin-import-x";

// Import boundaries (README "Layout"): proto/ is what the programs share, so it imports none of
// them and nothing from test/; the three programs never import one another; test/ may import
// anything. Paths are relative to this file.
const PROGRAMS = ["firewall-vm", "sandbox-vm", "host-tools"];
const programZones = PROGRAMS.map((program) => ({
  target: `./${program}`,
  from: PROGRAMS.filter((other) => other !== program).map((other) => `./${other}`),
  message: "A program never imports another program: move what both need into proto/.",
}));
const protoZone = (testExcept) => ({
  target: "./proto",
  from: "./test",
  ...(testExcept ? { except: testExcept } : {}),
  message: "proto/ never imports from test/.",
});
const protoProgramsZone = {
  target: "./proto",
  from: PROGRAMS.map((program) => `./${program}`),
  message: "proto/ never imports a program: it is what the programs share. A test that needs a program belongs in test/.",
};
const boundaries = (zones) => ["error", { basePath: import.meta.dirname, zones }];

export default tseslint.config(
  { ignores: ["node_modules/", "dist/", "**/build/", "out/", ".airlock/", "proto/gen/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/consistent-type-imports": "error",
      "no-constant-condition": ["error", { checkLoops: false }],
    },
  },
  {
    plugins: { "import-x": importX },
    settings: {
      "import-x/extensions": [".ts", ".js", ".mjs"],
      "import-x/parsers": { "@typescript-eslint/parser": [".ts"] },
      "import-x/resolver-next": [createNodeResolver({ extensions: [".ts", ".js", ".mjs", ".json", ".node"] })],
    },
    rules: {
      "import-x/no-restricted-paths": boundaries([...programZones, protoProgramsZone, protoZone()]),
    },
  },
  {
    // Unit tests beside proto's code read the public fixtures through their path table, as the
    // programs' unit tests do; that table is data, not code from test/. They make their scratch
    // folders through test/scratch.ts, as every test does, so none is left behind.
    files: ["proto/**/*.test.ts"],
    rules: {
      "import-x/no-restricted-paths": boundaries([...programZones, protoProgramsZone, protoZone(["./fixtures/index.ts", "./scratch.ts"])]),
    },
  },
  {
    // No import cycles among the source modules (type-only imports are erased, so they do not count).
    files: ["**/*.{ts,js,mjs}"],
    ignores: ["test/**", "**/*.test.ts"],
    rules: { "import-x/no-cycle": ["error", { ignoreExternal: true }] },
  },
);
