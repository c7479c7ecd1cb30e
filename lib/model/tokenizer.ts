/**
 * Tokenizer of a Hugging Face checkpoint folder (`tokenizer.json` + `tokenizer_config.json`),
 * through the pure-JS @huggingface/tokenizers. Special tokens are added as transformers adds them:
 * for the Llama tokenizer classes (`LlamaTokenizer(Fast)`, `CodeLlamaTokenizer(Fast)`) by
 * `add_bos_token` (default true) and `add_eos_token` (default false) of tokenizer_config.json, which
 * rebuild their post-processor; for other classes (`PreTrainedTokenizerFast`: Llama 3) by the
 * post-processor in tokenizer.json. Streams of ids decode incrementally (a multi-byte character
 * split over several tokens is held back until complete).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { ZotuneError, fail } from '../errors';
import { readJsonFile } from './config';

export interface EncodeOptions {
  /** Add the special tokens of the checkpoint's post-processor (bos for LLaMA). Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (bos, eos, pad) from the text. Default false. */
  skipSpecialTokens?: boolean;
}

function tokenId(tok: Tokenizer, config: Record<string, unknown>, key: string): number | undefined {
  const v = config[key];
  const content = typeof v === 'string' ? v : typeof v === 'object' && v !== null ? (v as { content?: unknown }).content : undefined;
  if (typeof content !== 'string') return undefined;
  return tok.token_to_id(content);
}

export class LlamaTokenizer {
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  readonly padTokenId: number | undefined;
  readonly vocabSize: number;
  private readonly tok: Tokenizer;
  /** The Llama classes' bos / eos flags (transformers' update_post_processor), or undefined: the post-processor decides. */
  private readonly llamaSpecials: { bos: boolean; eos: boolean } | undefined;

  /** From the parsed tokenizer.json and tokenizer_config.json. */
  constructor(tokenizerJson: unknown, tokenizerConfig: unknown = {}) {
    if (typeof tokenizerJson !== 'object' || tokenizerJson === null) fail('ZOTUNE_BAD_FILE', 'tokenizer.json is not a JSON object');
    const config = (typeof tokenizerConfig === 'object' && tokenizerConfig !== null ? tokenizerConfig : {}) as Record<string, unknown>;
    try {
      this.tok = new Tokenizer(tokenizerJson, config);
    } catch (err) {
      throw new ZotuneError('ZOTUNE_BAD_FILE', `tokenizer.json could not be loaded: ${(err as Error).message}`, { cause: err });
    }
    this.bosTokenId = tokenId(this.tok, config, 'bos_token');
    this.eosTokenId = tokenId(this.tok, config, 'eos_token');
    this.padTokenId = tokenId(this.tok, config, 'pad_token');
    this.vocabSize = this.tok.get_vocab(true).size;
    if (typeof config.tokenizer_class === 'string' && /^(Code)?LlamaTokenizer(Fast)?$/.test(config.tokenizer_class)) {
      const flag = (key: string, dflt: boolean) => {
        const v = config[key];
        if (v !== undefined && typeof v !== 'boolean') fail('ZOTUNE_BAD_FILE', `tokenizer_config.json: ${key} must be true or false, got ${JSON.stringify(v)}`);
        return (v as boolean | undefined) ?? dflt;
      };
      this.llamaSpecials = { bos: flag('add_bos_token', true), eos: flag('add_eos_token', false) };
      if (this.llamaSpecials.bos && this.bosTokenId === undefined) fail('ZOTUNE_BAD_FILE', 'tokenizer_config.json: add_bos_token needs a bos_token in the vocabulary');
      if (this.llamaSpecials.eos && this.eosTokenId === undefined) fail('ZOTUNE_BAD_FILE', 'tokenizer_config.json: add_eos_token needs an eos_token in the vocabulary');
    }
  }

  static load(dir: string): LlamaTokenizer {
    if (!fs.existsSync(path.join(dir, 'tokenizer.json')) && fs.existsSync(path.join(dir, 'tokenizer.model')))
      fail('ZOTUNE_UNSUPPORTED', `${dir} has only tokenizer.model (SentencePiece); zotune reads tokenizer.json: write one with transformers, AutoTokenizer.from_pretrained(dir).save_pretrained(dir)`);
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const config = fs.existsSync(cfgFile) ? readJsonFile(cfgFile) : {};
    return new LlamaTokenizer(readJsonFile(path.join(dir, 'tokenizer.json')), config);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (typeof text !== 'string') fail('ZOTUNE_INVALID_ARGUMENT', 'encode takes a string');
    const special = opts.addSpecialTokens ?? true, sp = this.llamaSpecials;
    if (!sp || !special) return this.tok.encode(text, { add_special_tokens: special }).ids;
    const ids = this.tok.encode(text, { add_special_tokens: false }).ids;
    return [...(sp.bos ? [this.bosTokenId!] : []), ...ids, ...(sp.eos ? [this.eosTokenId!] : [])];
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    for (const id of ids) if (!Number.isSafeInteger(id) || id < 0) fail('ZOTUNE_INVALID_ARGUMENT', `decode: ${id} is not a token id`);
    if (ids.length === 0) return ''; // the library refuses an empty list
    return this.tok.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  /**
   * A decoder for a stream of ids: push(id) returns the text that became final (a trailing
   * incomplete UTF-8 sequence, decoded as U+FFFD, is held back until the next ids complete it).
   * Each push decodes only the ids since the last emitted text plus the run before it (context for
   * tokenizers that decode a token differently at the start), so a stream costs linear time.
   */
  decoder(opts: DecodeOptions = {}): { push(id: number): string; flush(): string } {
    const ids: number[] = [];
    let prefix = 0, read = 0; // ids[prefix, read): already emitted, kept as context; ids[read, ...): pending
    const step = (final: boolean) => {
      const before = this.decode(ids.slice(prefix, read), opts), text = this.decode(ids.slice(prefix), opts);
      if (text.length <= before.length || (!final && text.endsWith('\uFFFD'))) return '';
      prefix = read;
      read = ids.length;
      return text.slice(before.length);
    };
    return {
      push: (id: number) => {
        ids.push(id);
        return step(false);
      },
      flush: () => step(true),
    };
  }
}
