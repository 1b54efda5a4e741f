// The same package through ESM import.
import flowmesh from 'flowmesh';
const fm = await flowmesh.connect('mem://');
const pos = await fm.publish('t', 'esm');
const [m] = await fm.read('t', { offset: pos.offset });
if (m.payload.toString() !== 'esm') throw new Error('read back ' + m.payload);
await fm.close();
console.log('node import OK');
