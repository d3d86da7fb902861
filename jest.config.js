/**
 * Two lanes. `unit`: unit tests and simulations, in process, no build needed (seconds).
 * `integration`: tests that start the compiled sidecar from dist/ or other real processes
 * (named *.integration.test.ts). `npm test` runs unit first, then builds and runs integration;
 * `npm run test:fast` is the unit lane alone, for the inner loop.
 *
 * @type {import('jest').Config}
 */
const shared = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  // Babel strips types only (the type check is `npm run typecheck`); it is pure JavaScript,
  // so `npm ci` needs no platform-specific binaries.
  transform: {
    '^.+\\.ts$': [
      'babel-jest',
      {
        babelrc: false,
        configFile: false,
        presets: [['@babel/preset-typescript', { allowDeclareFields: true }]],
        plugins: ['@babel/plugin-transform-modules-commonjs'],
      },
    ],
  },
};

module.exports = {
  testTimeout: 60000,
  projects: [
    { ...shared, displayName: 'unit', testMatch: ['**/*.test.ts'], testPathIgnorePatterns: ['\\.integration\\.test\\.ts$'] },
    { ...shared, displayName: 'integration', testMatch: ['**/*.integration.test.ts'] },
  ],
};
