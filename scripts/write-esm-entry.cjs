// Writes dist/index.mjs, the ES-module entry: it re-exports the CommonJS build by name, so
// `import { LinearLoRA } from 'fused-lora'` and `require('fused-lora')` share one module instance.
const fs = require('node:fs');
const path = require('node:path');
const dist = path.join(__dirname, '..', 'dist');
const names = Object.keys(require(path.join(dist, 'index.js'))).filter((n) => n !== 'default' && n !== '__esModule');
const src = `import cjs from './index.js';\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs;\n`;
fs.writeFileSync(path.join(dist, 'index.mjs'), src);
