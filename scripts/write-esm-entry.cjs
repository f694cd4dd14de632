// Writes the ES-module entries dist/index.mjs, dist/tfjs/index.mjs and dist/workers/index.mjs: each re-exports its CommonJS
// build by name, so `import { LinearLoRA } from 'fused-lora'` and `require('fused-lora')` share one
// module instance (and `fused-lora/tfjs` registers its kernels in one tfjs engine, whichever way it
// is loaded).
const fs = require('node:fs');
const path = require('node:path');
const dist = path.join(__dirname, '..', 'dist');

for (const entry of ['index', 'tfjs/index', 'workers/index']) {
  const names = Object.keys(require(path.join(dist, `${entry}.js`))).filter((n) => n !== 'default' && n !== '__esModule');
  const src = `import cjs from './index.js';\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs;\n`;
  fs.writeFileSync(path.join(dist, `${entry}.mjs`), src);
}
