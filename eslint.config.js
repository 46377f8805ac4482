// Lint rules for the TypeScript in src/, test/ and bench/: typescript-eslint's type-checked recommended set.
// Formatting is Prettier's job (.prettierrc.json), C and C++ are clang-format's (.clang-format).
import eslint from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "native/build/", "node_modules/", "**/*.js", "**/*.cjs", "**/*.mjs"] },
  eslint.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { project: "./tsconfig.test.json", tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // node:test's test()/describe() return promises the runner itself awaits.
      "@typescript-eslint/no-floating-promises": [
        "error",
        {
          allowForKnownSafeCalls: [
            { from: "package", name: ["test", "it", "describe", "suite"], package: "node:test" },
          ],
        },
      ],
      // Methods that implement a Promise-returning interface stay async even when their body is synchronous,
      // so that a throw becomes a rejection as callers of the interface expect.
      "@typescript-eslint/require-await": "off",
      // Unused arguments and catch bindings are kept when named with a leading underscore.
      // Rest siblings: `const { dropped: _d, ...rest } = o` is how an object loses a key.
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", caughtErrorsIgnorePattern: "^_", ignoreRestSiblings: true },
      ],
    },
  },
  {
    // The test API server stores, patches and validates arbitrary client-sent Kubernetes JSON, as the real
    // apiserver's unstructured storage does (test/apiserver/errors.ts: Obj = Record<string, any>), and its test
    // reads raw responses. Typing every access to that JSON is open work (narrowing from unknown); until then
    // the any-propagation rules are off for these files only. Every other rule applies.
    files: ["test/apiserver/**/*.ts", "test/apiserver.test.ts"],
    rules: {
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-return": "off",
    },
  },
);
