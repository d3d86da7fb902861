/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
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
  testTimeout: 60000,
};
